-- Tests of the Lua binding's outbound I/O (cosockets, myriad.http) and request API
-- additions (repeated args, fields after finish, res:on_abort, res:drain), with lua5.4 and
-- luajit. Clients are curl processes in the background (the loop runs in this process).
local myriad = require "myriad"
local http = require "myriad.http"
io.stdout:setvbuf("no")
local passed, failed = 0, 0
local function check(cond, what)
  if cond then passed = passed + 1 else failed = failed + 1; print("FAIL " .. what) end
end
local tmp = os.getenv("TMPDIR_TEST") or "/tmp"

local function run_until(done, secs)
  local deadline = os.time() + (secs or 20)
  local tick = myriad.timer(5, function() end, 5)
  while not done() and os.time() <= deadline do myriad.run_once() end
  tick:cancel()
  return done()
end
local function read(path)
  local f = io.open(path, "rb"); if not f then return nil end
  local s = f:read("*a"); f:close(); return s
end
local n = 0
local function curl(args)
  n = n + 1
  local out, done = tmp .. "/io-" .. n .. ".out", tmp .. "/io-" .. n .. ".done"
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
-- Runs fn in a myriad coroutine and the loop until it returns; its results.
local function async(fn, secs)
  local res, done = nil, false
  myriad.spawn(function() res = table.pack and table.pack(fn()) or { fn() }; done = true end)
  run_until(function() return done end, secs or 10)
  return res or {}
end

-- The upstream service.
local up = myriad.server {
  http = "127.0.0.1:0",
  handler = function(req, res)
    if req.path == "/slow" then
      myriad.sleep(400)
      res:finish("slow done")
    elseif req.path == "/len" then
      res:header("Content-Type", "text/plain")
      res:finish("fixed body")
    elseif req.path == "/chunked" then
      for i = 1, 5 do res:write(("piece%d;"):format(i)); res:flush(); myriad.sleep(5) end
      res:finish()
    elseif req.path == "/big" then
      res:finish(string.rep("x", 3 * 1024 * 1024))
    elseif req.path == "/echo" then
      local b = req:body()
      res:finish(req.method .. " " .. b)
    elseif req.path == "/hang" then
      myriad.sleep(3000)
      res:finish("late")
    else
      res:status(404); res:finish("nf")
    end
  end,
}
local UP = up:addresses()[1].addr
local U = "http://" .. UP

-- myriad.spawn and a raw cosocket: line, count and everything.
local r = async(function()
  local sock, err = myriad.connect(UP)
  if not sock then return nil, err end
  local ok = sock:send("GET /len HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  local status = sock:receive("*l")
  local head = {}
  while true do local l = sock:receive(); if l == "" then break end; head[#head + 1] = l end
  local four = sock:receive(4)
  local rest = sock:receive("*a")
  local after, aerr = sock:receive()
  sock:close()
  return ok, status, four, rest, after, aerr, table.concat(head, "|")
end)
check(r[1] == 49, "sock:send returns the byte count: " .. tostring(r[1]))
check(r[2] == "HTTP/1.1 200 OK", "receive('*l') strips CR LF: " .. tostring(r[2]))
check(r[3] == "fixe", "receive(4): " .. tostring(r[3]))
check(r[4] == "d body", "receive('*a') until close: " .. tostring(r[4]))
check(r[5] == nil and r[6] == "closed", "receive after EOF: nil, closed")
check(tostring(r[7]):find("Content-Length: 10", 1, true), "headers read line by line")

-- Errors: refused, bad address, timeout, not in a coroutine.
r = async(function()
  local dead = myriad.server { http = "127.0.0.1:0", handler = function(_, res) res:finish() end }
  local a = dead:addresses()[1].addr
  local closed = false
  dead:close(function() closed = true end)
  while not closed do myriad.sleep(5) end
  local s1, e1 = myriad.connect(a)
  local s2, e2 = myriad.connect("not an address")
  local s = myriad.tcp()
  s:settimeout(150)
  local c = s:connect(UP)
  s:send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
  local t0 = os.clock()
  local d, e3, partial = s:receive("*l")
  s:close()
  return s1, e1, s2, e2, c, d, e3, partial
end)
check(r[1] == nil and tostring(r[2]):find("refused"), "connect refused: " .. tostring(r[2]))
check(r[3] == nil and tostring(r[4]):find("not an address", 1, true), "bad address named: " .. tostring(r[4]))
check(r[5] == 1, "connect returns 1")
check(r[6] == nil and r[7] == "timeout" and r[8] == "", "settimeout: receive gives nil, timeout")
local okc, errc = pcall(function() local s = myriad.tcp(); return s:connect(UP) end)
check(not okc and tostring(errc):find("coroutine"), "connect outside a coroutine is an error: " .. tostring(errc))

-- myriad.http: Content-Length, chunked, until-close, big, POST, bad URL.
r = async(function()
  local a = http.get(U .. "/len")
  local b = http.get(U .. "/chunked")
  local c = http.get(U .. "/big")
  local d = http.request { url = U .. "/echo", method = "POST", body = "payload" }
  local e, eerr = http.get("https://x/")
  local f = http.get(U .. "/nope")
  return a, b, c, d, e, eerr, f
end)
check(r[1] and r[1].status == 200 and r[1].body == "fixed body" and r[1].headers["content-type"] == "text/plain",
  "http.get with Content-Length")
check(r[2] and r[2].body == "piece1;piece2;piece3;piece4;piece5;" and r[2].headers["transfer-encoding"] == "chunked",
  "http.get of a chunked response: " .. tostring(r[2] and r[2].body))
check(r[3] and #r[3].body == 3 * 1024 * 1024, "http.get of 3 MiB")
check(r[4] and r[4].body == "POST payload", "http.request POST with a body")
check(r[5] == nil and tostring(r[6]):find("unsupported URL"), "https refused with a reason")
check(r[7] and r[7].status == 404 and r[7].body == "nf", "404 status and body")

-- A handler calling another service does not hold up an unrelated request.
local seen = {}
local front = myriad.server {
  http = "127.0.0.1:0",
  handler = function(req, res)
    if req.path == "/proxy" then
      seen.proxy_started = true
      local up_res, err = http.get(U .. "/slow")
      res:finish(up_res and up_res.body or ("error: " .. err))
    elseif req.path == "/args" then
      local a = req.args
      res:finish(type(a.a) == "table" and table.concat(a.a, ",") .. "|" .. tostring(a.b) .. "|" .. a.c or "not a table")
    elseif req.path == "/keep" then
      seen.req = req
      res:finish("kept")
      seen.after = { req.target, req.method, req.path, req.query, req.headers["user-agent"], req.peer, req.protocol,
        req.args.x }
    elseif req.path == "/abort" then
      res:on_abort(function() seen.aborted = true end)
      -- (a client that goes away is noticed when writing to it fails)
      for _ = 1, 100 do
        if not res:write(string.rep("w", 1024)) then break end
        res:flush()
        myriad.sleep(30)
      end
      seen.write_failed = not res:write("more")
      res:finish()
    elseif req.path == "/drain" then
      local piece, max_q, total, waits = string.rep("d", 64 * 1024), 0, 0, 0
      for _ = 1, 64 do
        res:write(piece)
        total = total + #piece
        max_q = math.max(max_q, res:queued())
        if res:queued() > 256 * 1024 then
          waits = waits + 1
          if not res:drain() then break end
        end
      end
      seen.drain = { max_q = max_q, waits = waits, total = total }
      res:finish()
    else
      res:finish("fast")
    end
  end,
}
local F = "http://" .. front:addresses()[1].addr
local slow = curl("-o " .. tmp .. "/io-proxy.body -w '%{time_total}' " .. F .. "/proxy")
run_until(function() return seen.proxy_started end, 10) -- the proxy request waits upstream
local fast_body
local fast = curl("-w ' %{time_total}' " .. F .. "/fast")
local fast_done_first
run_until(function()
  local fd, fb = fast()
  local sd = slow()
  if fd and fast_done_first == nil then fast_done_first = not sd; fast_body = fb end
  return fd and sd
end, 20)
local fb, ft = tostring(fast_body):match("^(%S+) ([%d.]+)$")
check(fb == "fast" and fast_done_first, "an unrelated request is answered while the handler waits upstream: " .. tostring(fast_body))
check(tonumber(ft or 9) < 0.3, "... in " .. tostring(ft) .. " s (upstream takes 0.4 s)")
check(read(tmp .. "/io-proxy.body") == "slow done", "the proxied answer arrives")

-- Repeated query arguments: a list, OpenResty's way.
check(fetch(F .. "/args?a=1\\&a=2\\&b\\&c=3") == "1,2|true|3", "repeated args are a list")

-- Request fields stay readable after finish.
local kept = fetch("-A probe/1 '" .. F .. "/keep?x=%41'")
local a = seen.after or {}
check(kept == "kept" and a[1] == "/keep?x=%41" and a[2] == "GET" and a[3] == "/keep" and a[4] == "x=%41",
  "target, method, path, query after finish")
check(a[5] == "probe/1" and tostring(a[6]):match("^127%.0%.0%.1:%d+$") and a[7] == "http" and a[8] == "A",
  "headers, peer, protocol, args after finish")
check(seen.req and seen.req.target == "/keep?x=%41", "and later, from outside the handler")

-- res:on_abort: a callback when the client goes away.
fetch("--max-time 0.3 " .. F .. "/abort")
run_until(function() return seen.aborted end, 5)
check(seen.aborted, "res:on_abort callback runs when the client goes away")
run_until(function() return seen.write_failed ~= nil end, 5)
check(seen.write_failed, "writes fail after the abort")

-- res:drain: a 4 MiB response to a slow reader with bounded queue.
local got = fetch("--limit-rate 2M -o /dev/null -w '%{size_download}' " .. F .. "/drain")
check(got == tostring(64 * 64 * 1024), "drained response arrives whole: " .. tostring(got))
local d = seen.drain or {}
check((d.waits or 0) > 0, "res:drain() waited: " .. tostring(d.waits))
check((d.max_q or 1e9) <= 256 * 1024 + 64 * 1024, "queue stayed bounded: " .. tostring(d.max_q))

local closed = 0
up:close(function() closed = closed + 1 end)
front:close(function() closed = closed + 1 end)
run_until(function() return closed == 2 end, 10)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
