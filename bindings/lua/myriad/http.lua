-- myriad.http: a small HTTP/1.1 client on myriad's cosockets (myriad.connect). Its calls
-- yield the running coroutine (a handler, or one from myriad.spawn) while waiting, so the
-- loop keeps serving other requests.
--
--   local http = require "myriad.http"
--   local res, err = http.get("http://127.0.0.1:8080/x")
--   local res, err = http.request{ url = "http://host:port/path", method = "POST",
--                                  headers = { ["Content-Type"] = "text/plain" },
--                                  body = "...", timeout = 5000 }
--   -- res.status (number), res.headers (lower-cased names; repeated ones as lists),
--   -- res.body (string: Content-Length, chunked or until close)
--
-- One request per connection (it sends Connection: close); http:// only.
local myriad = require "myriad"

local M = {}

-- "http://host[:port][/path]" -> address, host header, path
local function parse_url(url)
  local host, rest = url:match("^http://([^/]+)(.*)$")
  if not host then return nil, "unsupported URL (http://HOST[:PORT]/PATH expected): " .. tostring(url) end
  local addr = host
  if not host:match(":%d+$") then addr = host .. ":80" end
  return addr, host, rest == "" and "/" or rest
end

-- Adds a header line to a response's headers (lower-cased, repeated ones as lists).
local function add_header(h, line)
  local k, v = line:match("^([^:]+):%s*(.-)%s*$")
  if not k then return false end
  k = k:lower()
  local old = h[k]
  if old == nil then h[k] = v
  elseif type(old) == "table" then old[#old + 1] = v
  else h[k] = { old, v } end
  return true
end

local function read_chunked(sock)
  local parts = {}
  while true do
    local line, err = sock:receive("*l")
    if not line then return nil, "chunk size: " .. err end
    local size = tonumber(line:match("^%s*(%x+)"), 16)
    if not size then return nil, "bad chunk size line: " .. line end
    if size == 0 then
      repeat -- trailers until the empty line
        line, err = sock:receive("*l")
        if not line then return nil, "trailers: " .. err end
      until line == ""
      return table.concat(parts)
    end
    local data
    data, err = sock:receive(size)
    if not data then return nil, "chunk: " .. err end
    parts[#parts + 1] = data
    line, err = sock:receive("*l")
    if line ~= "" then return nil, "chunk not followed by CRLF: " .. tostring(line or err) end
  end
end

--- Sends one request and reads the whole response: res table, or nil and an error.
function M.request(opts)
  local addr, host, path = parse_url(opts.url)
  if not addr then return nil, host end
  local method = (opts.method or "GET"):upper()
  local sock, err = myriad.connect(addr, opts.timeout)
  if not sock then return nil, "connect " .. addr .. ": " .. err end
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: " .. host, "Connection: close" }
  local has = {}
  for k, v in pairs(opts.headers or {}) do
    has[k:lower()] = true
    lines[#lines + 1] = k .. ": " .. v
  end
  local body = opts.body
  if body and not has["content-length"] then lines[#lines + 1] = "Content-Length: " .. #body end
  local ok
  ok, err = sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  if not ok then sock:close(); return nil, "send: " .. err end
  local status_line
  status_line, err = sock:receive("*l")
  if not status_line then sock:close(); return nil, "status line: " .. err end
  local status = tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then sock:close(); return nil, "bad status line: " .. status_line end
  local res = { status = status, headers = {}, reason = status_line:match("^HTTP/1%.%d %d%d%d ?(.*)$") }
  while true do
    local line
    line, err = sock:receive("*l")
    if not line then sock:close(); return nil, "headers: " .. err end
    if line == "" then break end
    if not add_header(res.headers, line) then sock:close(); return nil, "bad header line: " .. line end
  end
  local te, cl = res.headers["transfer-encoding"], res.headers["content-length"]
  if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
    res.body = ""
  elseif type(te) == "string" and te:lower():find("chunked", 1, true) then
    res.body, err = read_chunked(sock)
  elseif cl then
    local n = tonumber(cl)
    if not n or type(cl) == "table" then sock:close(); return nil, "bad Content-Length" end
    res.body, err = sock:receive(n)
  else
    res.body, err = sock:receive("*a")
  end
  sock:close()
  if not res.body then return nil, "body: " .. err end
  return res
end

--- GET `url`: res table, or nil and an error.
function M.get(url, headers)
  return M.request { url = url, headers = headers }
end

return M
