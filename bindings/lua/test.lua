-- Tests of the Lua binding, run with lua5.4 and luajit: every API function, handler
-- errors, coroutine style, and registry/GC growth over 100,000 requests.
-- Clients are curl processes in the background (the loop runs in this process).
local myriad = require "myriad"
io.stdout:setvbuf("no")
local passed, failed = 0, 0
local function check(cond, what)
  if os.getenv("LT_VERBOSE") then print("check", what) end
  if cond then passed = passed + 1 else failed = failed + 1; print("FAIL " .. what) end
end
local tmp = os.getenv("TMPDIR_TEST") or "/tmp"

-- Runs the loop until done() or `secs` pass.
local function run_until(done, secs)
  local deadline = os.time() + (secs or 20)
  -- a ticking timer so that the loop wakes up to look at files written by curl
  local tick = myriad.timer(5, function() end, 5)
  while not done() and os.time() <= deadline do myriad.run_once() end
  tick:cancel()
  return done()
end

local function read(path)
  local f = io.open(path, "rb"); if not f then return nil end
  local s = f:read("*a"); f:close(); return s
end

-- Starts curl in the background; returns a function telling whether it finished and its output.
local n = 0
local function curl(args)
  n = n + 1
  local out, done = tmp .. "/lt-" .. n .. ".out", tmp .. "/lt-" .. n .. ".done"
  os.remove(done)
  os.execute("(curl -sS --max-time 20 " .. args .. " > " .. out .. " 2>&1; touch " .. done .. ") &")
  return function()
    if read(done) then return true, read(out) end
    return false
  end
end
local function fetch(args)
  local f = curl(args)
  local body
  run_until(function() local ok, b = f(); body = b; return ok end)
  return body
end

-- timers: order, repeat, cancel
local order = {}
myriad.timer(30, function() order[#order + 1] = "b" end)
myriad.timer(10, function() order[#order + 1] = "a" end)
local t = myriad.timer(20, function() order[#order + 1] = "cancelled" end)
check(t:cancel(), "cancel armed timer")
check(not t:cancel(), "second cancel is false")
local ticks = 0
local rep
rep = myriad.timer(1, function() ticks = ticks + 1; if ticks == 3 then rep:cancel() end end, 2)
run_until(function() return #order == 2 and ticks == 3 end, 5)
check(order[1] == "a" and order[2] == "b" and #order == 2, "timers fire in deadline order")
check(ticks == 3, "repeating timer cancelled from inside")
check(myriad.backend_fd() >= 0, "backend_fd")
check(myriad.next_timeout() == -1 or myriad.next_timeout() == 0, "nothing armed: next_timeout -1")
myriad.timer(50, function() end)
local nt = myriad.next_timeout()
check(nt >= 1 and nt <= 50, "next_timeout reports the timer: " .. nt)
check(myriad.run_once(true) == false, "run_once(nowait)")

-- signals
local got
local w = myriad.signal("SIGUSR1", function(s) got = s end)
os.execute("kill -USR1 " .. (read("/proc/self/stat") and io.open("/proc/self/stat"):read("*n") or 0))
run_until(function() return got ~= nil end, 5)
check(got == 10, "signal delivered to its callback")
check(w:cancel(), "signal watch cancelled")
check(not pcall(myriad.signal, 9, function() end), "SIGKILL refused")

-- server API
check(not pcall(myriad.server, {}), "server needs a handler")
check(not pcall(myriad.server, { http = { "nonsense" }, handler = print }), "bad address refused")
check(not pcall(myriad.server, { http = { "127.0.0.1:0" }, threads = 2, handler = print }), "threads > 1 refused")
-- Errors name what failed.
local function err_of(opts)
  local ok, e = pcall(myriad.server, opts)
  return not ok and tostring(e) or ""
end
local e = err_of { htp = "127.0.0.1:0", handler = print }
check(e:find("unknown option 'htp'", 1, true) and e:find("known: http", 1, true), "a typo names the bad key: " .. e)
e = err_of { http = "nosuchhost.invalid:80", handler = print }
check(e:find("nosuchhost.invalid", 1, true) and e:find("host name", 1, true), "a host name is refused as such: " .. e)
e = err_of { fcgi = "unix:/nonexistent/x.sock", handler = print }
check(e:find("fcgi listener unix:/nonexistent/x.sock", 1, true) and e:find("does not exist", 1, true),
  "a missing socket directory is named: " .. e)
local holder = myriad.server { http = "127.0.0.1:0", handler = print }
local taken = holder:addresses()[1].addr
e = err_of { http = taken, handler = print }
check(e:find("http listener " .. taken, 1, true) and e:find("in use", 1, true), "a port in use is named: " .. e)
local closed_holder = false
holder:close(function() closed_holder = true end)
run_until(function() return closed_holder end, 5)
-- systemd: this process was not socket-activated nor started by a manager that listens
-- (tests/systemd_e2e.sh runs the demo under systemd-socket-activate for the rest).
check(myriad.listen_fds() == 0, "listen_fds: not socket-activated")
check(myriad.notify("READY=1") == false, "notify without NOTIFY_SOCKET: false")
check(myriad.watchdog() == false, "watchdog without WATCHDOG_USEC: false")
check(not pcall(myriad.notify), "notify needs a string")
check(not pcall(myriad.server, { inherited = true, handler = print }), "inherited with nothing passed: no listener")
local errors_seen = 0
local srv = myriad.server {
  http = { "127.0.0.1:0" }, fcgi = { "unix:" .. tmp .. "/lt.sock" },
  max_body = 1000,
  handler = function(req, res)
    if req.path == "/req" then
      local h = req.headers
      res:header("X-Method", req.method)
      res:header("X-Query", req.query)
      res:header("X-Arg", tostring(req.args.b) .. "," .. tostring(req.args.flag))
      res:header("X-Target", req.target)
      res:header("X-Hdr", h["X-Test"] .. "|" .. table.concat(h.dup, ","))
      res:header("X-Env", req.env.REQUEST_METHOD .. "|" .. req.env.QUERY_STRING)
      res:header("X-Peer", req.peer:match("^127%.0%.0%.1:") and "ok" or req.peer)
      res:header("X-Proto", req.protocol)
      res:status(201)
      res:write("a"); res:write("b"); res:flush()
      check(res:queued() >= 0, "queued")
      check(not res:aborted(), "not aborted")
      res:finish("c")
      check(not pcall(res.finish, res), "finish twice is an error")
    elseif req.path == "/error" then
      errors_seen = errors_seen + 1
      error("boom")
    elseif req.path == "/sleep" then
      myriad.sleep(20)
      res:finish("slept")
    elseif req.path == "/error-later" then
      myriad.sleep(5)
      error("late boom")
    elseif req.path == "/body" then
      res:finish(req:body() or "nil")
    elseif req.path == "/body-cb" then
      req:body(function(b) res:finish("cb:" .. b) end)
    elseif req.path == "/stream-in" then
      local parts = {}
      req:on_body(function(c) if c then parts[#parts + 1] = c else res:finish(#table.concat(parts) .. "") end end)
    elseif req.path == "/cut" then
      res:write("part"); res:flush(); res:abort()
      check(not pcall(res.abort, res), "abort twice is an error")
    elseif req.path == "/forget-mid" then
      -- the head is out, then neither finished nor kept: collected, the response is cut short
      res:write("mid"); res:flush()
    elseif req.path == "/forget" then
      -- neither finished nor kept: collected, the client gets a 500
    else
      res:status(404); res:finish("nf")
    end
  end,
}
local addrs = srv:addresses()
check(#addrs == 2 and addrs[1].proto == "http" and addrs[2].proto == "fcgi", "addresses")
local base = "http://" .. addrs[1].addr
local r = fetch("-i -H 'X-Test: one' -H 'dup: 1' -H 'dup: 2' '" .. base .. "/req?b=x%20y&flag'")
check(r:match("^HTTP/1.1 201"), "status")
check(r:match("X%-Method: GET"), "method")
check(r:match("X%-Query: b=x%%20y&flag"), "query raw")
check(r:match("X%-Arg: x y,true"), "args parsed and decoded")
check(r:match("X%-Target: /req%?b=x%%20y&flag"), "target")
check(r:match("X%-Hdr: one|1,2"), "headers case-insensitive, repeated as a list")
check(r:match("X%-Env: GET|b=x%%20y&flag"), "env")
check(r:match("X%-Peer: ok"), "peer")
check(r:match("X%-Proto: http"), "protocol")
check(r:match("\r\n\r\nabc$"), "write/flush/finish body: " .. r)
check(fetch("-o /dev/null -w '%{http_code}' " .. base .. "/error") == "500", "handler error gives 500")
check(fetch(base .. "/sleep") == "slept", "coroutine sleep")
check(fetch("-o /dev/null -w '%{http_code}' " .. base .. "/error-later") == "500", "error after a yield gives 500")
check(fetch("--data-binary hello " .. base .. "/body") == "hello", "req:body() yields for the body")
check(fetch("--data-binary hi " .. base .. "/body-cb") == "cb:hi", "req:body(fn)")
check(fetch("-H 'Transfer-Encoding: chunked' --data-binary 0123456789 " .. base .. "/stream-in") == "10", "on_body streams")
local big = tmp .. "/lt-big"
local bf = io.open(big, "wb"); bf:write(string.rep("x", 5000)); bf:close()
check(fetch("-o /dev/null -w '%{http_code}' --data-binary @" .. big .. " " .. base .. "/body"):match("^413"), "max_body 413")
local f = curl("-o /dev/null -w '%{http_code}' " .. base .. "/forget")
run_until(function() collectgarbage(); return (f()) end)
check(select(2, f()) == "500", "a request collected unfinished answers 500")
f = curl(base .. "/forget-mid")
run_until(function() collectgarbage(); return (f()) end)
local mid = select(2, f())
check(mid:find("mid", 1, true) and mid:find("(18)", 1, true), "a request collected after its head is cut short: " .. mid)
local cut = fetch(base .. "/cut")
-- (curl's error on stderr may come before the body on stdout)
check(cut:find("part", 1, true) and cut:find("(18)", 1, true), "res:abort() cuts the response short: " .. cut)
check(fetch(base .. "/") == "nf", "server keeps serving after errors")
check(errors_seen == 1, "handler ran once for /error")

-- GC: registry and memory do not grow over 100,000 requests.
local function registry_size()
  local c = 0
  for _ in pairs(debug.getregistry()) do c = c + 1 end
  return c
end
local cfg = tmp .. "/lt-urls.cfg"
local function batch(count)
  local fh = io.open(cfg, "w")
  for _ = 1, count do fh:write('url = "' .. base .. '/"\n', 'output = "/dev/null"\n') end
  fh:close()
  local done = curl("-K " .. cfg)
  run_until(function() return (done()) end, 120)
end
batch(10000)
collectgarbage(); collectgarbage()
local reg0, mem0 = registry_size(), collectgarbage("count")
local st0 = myriad.stats()
local before = st0.accepted
batch(100000)
collectgarbage(); collectgarbage()
local st = myriad.stats()
local reg1, mem1 = registry_size(), collectgarbage("count")
print(string.format("after 100000 requests: registry %d -> %d entries, Lua heap %.0f -> %.0f KiB, live requests %d",
  reg0, reg1, mem0, mem1, st.live_requests))
check(st.accepted - before <= 5, "curl reused its connection")
for _, k in ipairs { "iterations", "wait", "ctl", "read", "received", "write", "accept", "other", "wakeups" } do
  check(type(st[k]) == "number" and st[k] == math.floor(st[k]), "stats()." .. k)
end
check(st.read + st.received - st0.read - st0.received >= 100000, "stats: every request's input counted")
check(st.write - st0.write >= 100000, "stats: every response's output counted")
check(reg1 <= reg0 + 2, "registry did not grow")
check(mem1 < mem0 + 256, "Lua heap did not grow")
check(st.live_requests == 0, "every request object collected")

-- the router, forms, query strings and cookies
local rt = myriad.router()
local hooked = 0
rt:use(function(req, res)
  hooked = hooked + 1
  if req.path:match("^/private/") and not req.headers["x-token"] then
    res:status(401):header("Content-Type", "text/plain"):finish("no token")
    return true
  end
end)
rt:get("/u/:id", function(req, res)
  res:cookie("seen", "yes", { path = "/", http_only = true, same_site = "Lax", max_age = 60 })
  check(not pcall(res.cookie, res, "bad name", "v"), "res:cookie refuses a bad name")
  check(not pcall(res.cookie, res, "n", "a;b"), "res:cookie refuses a bad value")
  res:finish(req.params.id .. "|" .. tostring(req.cookies.sid) .. "|" .. tostring(req.cookies.a))
end)
rt:get("/u/new", function(req, res) res:finish("new form") end)
rt:get("/files/*path", function(req, res) res:finish("file " .. req.params.path) end)
rt:get("/private/x", function(req, res) res:finish("secret") end)
rt:get("/q", function(req, res)
  local out = {}
  for _, p in ipairs(myriad.parse_urlencoded(req.query)) do out[#out + 1] = "[" .. p[1] .. "=" .. p[2] .. "]" end
  local a = req.args.a
  res:finish(table.concat(out) .. " a=" .. (type(a) == "table" and table.concat(a, ",") or tostring(a))
    .. " flag=" .. tostring(req.args.flag) .. " %zz=" .. tostring(req.args["%zz"]))
end)
rt:post("/f", function(req, res)
  local out = {}
  local ok, err, status = req:form(function(ev, a)
    if ev == "part" then out[#out + 1] = "<" .. a.name .. "|" .. tostring(a.filename) .. "|" .. tostring(a.content_type) .. ">"
    elseif ev == "data" then out[#out + 1] = a
    else out[#out + 1] = ";" end
  end)
  if not ok then return res:status(status):finish(err) end
  res:finish(table.concat(out))
end)
check(not pcall(rt.get, rt, "/u/:id", function() end), "duplicate route refused")
local okc, msgc = pcall(rt.get, rt, "/u/:name/x", function() end)
check(not okc and tostring(msgc):match("conflicts"), "conflicting parameter name refused: " .. tostring(msgc))
local okp, msgp = pcall(rt.get, rt, "nope", function() end)
check(not okp and tostring(msgp):match("starts with '/'"), "malformed pattern refused: " .. tostring(msgp))
check(myriad.cookie("a", "b", { secure = true, same_site = "None" }) == "a=b; Secure; SameSite=None", "myriad.cookie")
local nc, ce = myriad.cookie("a", "b", { same_site = "None" })
check(nc == nil and ce:match("Secure"), "SameSite=None needs Secure")
local rsrv = myriad.server { http = { "127.0.0.1:0" }, handler = rt }
local rbase = "http://" .. rsrv:addresses()[1].addr
local function get(args) return fetch("-sS " .. args) end
check(get("-H 'Cookie: a=1; sid=s3; a=2' " .. rbase .. "/u/42") == "42|s3|1", "params and cookies (first of a name)")
check(get("-i " .. rbase .. "/u/42"):match("Set%-Cookie: seen=yes; Path=/; Max%-Age=60; HttpOnly; SameSite=Lax"), "Set-Cookie")
check(get(rbase .. "/u/new") == "new form", "static beats parameter")
check(get(rbase .. "/u/a%2Fb") == "a/b|nil|nil", "parameter decoded after matching")
check(get("-o /dev/null -w '%{http_code}' " .. rbase .. "/u/%zz") == "400", "bad escape 400")
check(get("-o /dev/null -w '%{http_code}' " .. rbase .. "/u/") == "404", "empty segment 404")
check(get("-o /dev/null -w '%{http_code} %header{allow}' -X DELETE " .. rbase .. "/u/1") == "405 GET, HEAD", "405 with Allow")
check(get(rbase .. "/files/a/b.css") == "file a/b.css", "wildcard")
check(get("-o /dev/null -w '%{http_code}' " .. rbase .. "/private/x") == "401", "before-hook answers")
check(get("-H 'X-Token: t' " .. rbase .. "/private/x") == "secret", "before-hook passes")
check(get("'" .. rbase .. "/q?a=1&b=x+y%21&a=2&&flag&e=&%zz=100%&k=a=b'") ==
  "[a=1][b=x y!][a=2][flag=][e=][%zz=100%][k=a=b] a=1,2 flag=true %zz=100%",
  "query: the shared cases (req.args: repeated names as a list, a bare name true, as in OpenResty)")
check(get("-F t=hi -F 'f=@" .. tmp .. "/lt-1.out;filename=x.txt;type=text/plain' " .. rbase .. "/f"):match("^<t|nil|nil>hi;<f|x.txt|text/plain>"), "multipart form via curl -F")
check(get("--data-binary 'a=1&b=x+y' " .. rbase .. "/f") == "<a|nil|nil>1;<b|nil|nil>x y;", "urlencoded form")
check(get("-o /dev/null -w '%{http_code}' -H 'Content-Type: multipart/form-data; boundary=X' --data-binary '--X' " .. rbase .. "/f") == "400", "truncated multipart 400")
check(get("-o /dev/null -w '%{http_code}' -H 'Content-Type: text/plain' --data-binary 'x' " .. rbase .. "/f") == "415", "not a form 415")
check(hooked >= 14, "the hook ran for every request")
local rclosed = false
rsrv:close(function() rclosed = true end)
run_until(function() return rclosed end, 10)

-- close: graceful, the callback runs, then new connections are refused
local closed = false
srv:close(function() closed = true end)
run_until(function() return closed end, 10)
check(closed, "close callback")
local after = fetch("-o /dev/null -w '%{http_code}' " .. base .. "/")
check(after:match("000") or after:match("Failed to connect"), "closed server refuses connections: " .. after)
srv = nil
collectgarbage()

-- the access log: a format of our own, reopen after a rename, option errors
check(not pcall(myriad.server, { http = { "127.0.0.1:0" }, handler = print, access_log = tmp .. "/x.log",
  access_log_format = "$nope" }), "access_log_format with an unknown variable refused")
check(not pcall(myriad.server, { http = { "127.0.0.1:0" }, handler = print, access_log = "/nonexistent-dir/x.log" }),
  "access_log that cannot be opened refused")
check(not pcall(myriad.server, { http = { "127.0.0.1:0" }, handler = print, access_log_format = "$status" }),
  "access_log_format without access_log refused")
local alog = tmp .. "/lt-access.log"
os.remove(alog); os.remove(alog .. ".1")
local asrv = myriad.server{ http = { "127.0.0.1:0" }, access_log = alog,
  access_log_format = "$status $request_method $uri $protocol $http_x_tag",
  handler = function(_, res) res:status(204); res:finish() end }
local abase = "http://" .. asrv:addresses()[1].addr
fetch("-H 'X-Tag: one' " .. abase .. "/a")
run_until(function() return (read(alog) or "") ~= "" end, 5)
check(read(alog) == "204 GET /a HTTP one\n", "access log line in the given format: " .. tostring(read(alog)))
os.rename(alog, alog .. ".1")
asrv:reopen_logs()
fetch(abase .. "/b")
run_until(function() return (read(alog) or "") ~= "" end, 5)
check(read(alog) == "204 GET /b HTTP -\n" and read(alog .. ".1") == "204 GET /a HTTP one\n", "reopen_logs after a rename")
local aclosed = false
asrv:close(function() aclosed = true end)
run_until(function() return aclosed end, 10)
os.remove(alog); os.remove(alog .. ".1")

-- static files: myriad.files (options, errors), files:serve, res:send_file (ranges, errors)
local froot = tmp .. "/lt-files"
os.execute("rm -rf " .. froot .. " && mkdir -p " .. froot .. "/d")
do
  local f = io.open(froot .. "/a.txt", "wb"); f:write("0123456789"); f:close()
  f = io.open(froot .. "/d/home.htm", "wb"); f:write("home"); f:close()
end
local nf, nerr = myriad.files(froot .. "/missing")
check(nf == nil and nerr:find("missing", 1, true), "myriad.files of a missing root: nil and the reason: " .. tostring(nerr))
check(myriad.files(froot .. "/a.txt") == nil, "myriad.files of a file: nil")
check(myriad.files(froot, { index = "a/b" }) == nil, "an index with a slash refused")
check(myriad.files(froot, { cache_valid_ms = 0 }) == nil, "cache_valid_ms 0 refused")
check(not pcall(myriad.files, froot, 5), "options must be a table")
local fs = myriad.files(froot, { index = "home.htm", cache_control = "max-age=9", precompressed = false,
  cache_entries = 8, cache_valid_ms = 500 })
check(fs ~= nil, "myriad.files with every option")
local served, sent_ok, sent_err = 0, nil, nil
local fsrv = myriad.server{ http = { "127.0.0.1:0" }, handler = function(req, res)
  if req.path:sub(1, 3) == "/f/" then
    served = served + 1
    check(fs:serve(req, req.path:sub(4)), "files:serve returns true")
    check(not pcall(res.finish, res), "the request is ended after files:serve")
  elseif req.path == "/range" then
    sent_ok = res:send_file(froot .. "/a.txt", 2, 3)
  elseif req.path == "/whole" then
    res:header("Content-Type", "text/x-digits")
    res:send_file(froot .. "/a.txt")
  elseif req.path == "/missing" then
    sent_ok, sent_err = res:send_file(froot .. "/nope")
  else
    sent_ok, sent_err = res:send_file(froot .. "/a.txt", 5, 100)
  end
end }
local fbase = "http://" .. fsrv:addresses()[1].addr
check(fetch(fbase .. "/f/a.txt") == "0123456789", "files:serve a file")
check(fetch("-o /dev/null -w '%{http_code} %header{cache-control}' " .. fbase .. "/f/a.txt") == "200 max-age=9",
  "files:serve with cache_control")
check(fetch(fbase .. "/f/d/") == "home", "files:serve the index option")
check(fetch("--path-as-is -o /dev/null -w '%{http_code}' " .. fbase .. "/f/../x") == "400", "files:serve refuses a traversal")
check(fetch("-o /dev/null -w '%{http_code}' -r 1-2 " .. fbase .. "/f/a.txt") == "206", "files:serve a range")
check(served == 5, "files:serve called for each")
check(fetch(fbase .. "/range") == "234" and sent_ok == true, "res:send_file(path, offset, length)")
check(fetch("-o /dev/null -w '%{content_type} %header{content-length}' " .. fbase .. "/whole") == "text/x-digits 10",
  "res:send_file keeps the headers set before")
check(fetch("-o /dev/null -w '%{http_code}' " .. fbase .. "/missing") == "404" and sent_ok == false and sent_err,
  "res:send_file of a missing file: 404, false and the reason")
check(fetch("-o /dev/null -w '%{http_code}' " .. fbase .. "/past") == "416" and sent_ok == false,
  "res:send_file past the end: 416")
local fclosed = false
fsrv:close(function() fclosed = true end)
run_until(function() return fclosed end, 10)
fs = nil
collectgarbage()
os.execute("rm -rf " .. froot)

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
