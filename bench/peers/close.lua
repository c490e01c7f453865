-- wrk script: every request asks for `Connection: close` (a connection per request, as
-- `ab` without -k or an HTTP/1.0 client makes).
wrk.headers["Connection"] = "close"
