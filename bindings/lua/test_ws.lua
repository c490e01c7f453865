-- Tests of the Lua binding's WebSocket (req:websocket, ws:receive, pub/sub), with lua5.4
-- and luajit: tests/ws_raw.py (a raw-socket client) runs the echo contract and the framing
-- rules against an echo written with callbacks and one written as a receive() loop in the
-- handler's coroutine; a Python client checks pub/sub and the close code. The clients run
-- in the background (the loop runs in this process). Ends with "N passed, M failed".
local myriad = require "myriad"
io.stdout:setvbuf("no")
local passed, failed = 0, 0
local function check(cond, what)
  if cond then passed = passed + 1 else failed = failed + 1; print("FAIL " .. what) end
end
local tmp = os.getenv("TMPDIR_TEST") or "/tmp"
local root = os.getenv("MYRIAD_ROOT") or "../../.."

local function read(path)
  local f = io.open(path, "rb"); if not f then return nil end
  local s = f:read("*a"); f:close(); return s
end
local function run_until(done, secs)
  local deadline = os.time() + (secs or 30)
  local tick = myriad.timer(5, function() end, 5)
  while not done() and os.time() <= deadline do myriad.run_once() end
  tick:cancel()
  return done()
end
local n = 0
-- Runs a shell command in the background; waits (running the loop) for it; its output.
local function bg(cmd)
  n = n + 1
  local out, done = tmp .. "/ws-" .. n .. ".out", tmp .. "/ws-" .. n .. ".done"
  os.remove(done)
  os.execute("(" .. cmd .. " > " .. out .. " 2>&1; touch " .. done .. ") &")
  run_until(function() return read(done) ~= nil end, 60)
  return read(out) or ""
end

local closes, opens = {}, 0
local srv = myriad.server {
  http = "127.0.0.1:0",
  handler = function(req, res)
    if req.path == "/ws" then
      local ws, err = req:websocket {
        protocols = { "chat", "echo" },
        on_open = function(ws) opens = opens + 1 end,
        on_message = function(ws, data, binary) ws:send(data, binary) end,
        on_close = function(ws, code, reason) closes[#closes + 1] = code end,
      }
      if not ws then return end -- refused: answered 4xx already
      check(req.path == "/ws", "request fields readable after the upgrade")
    elseif req.path == "/recv" then
      local ws = req:websocket {}
      if not ws then return end
      while true do
        local data, binary, code = ws:receive()
        if not data then
          check(binary == "closed", "receive() after the close says closed")
          closes[#closes + 1] = code
          break
        end
        ws:send(data, binary)
      end
    elseif req.path == "/sub" then
      local ws = req:websocket {
        on_open = function(ws) check(ws:subscribe("room"), "subscribe") end,
        on_message = function(ws, data)
          if data == "proto" then ws:send(ws:protocol() or "none") return end
          local got = myriad.publish("room", data)
          check(got >= 1, "publish reached " .. got)
        end,
      }
    else
      res:finish("plain")
    end
  end,
}
local port = srv:addresses()[1].addr:match(":(%d+)$")
local py = "python3 " .. root .. "/tests/ws_raw.py 127.0.0.1:" .. port
for _, path in ipairs { "/ws", "/recv" } do
  local out = bg(py .. " --path " .. path)
  for line in out:gmatch("[^\n]+") do if line:match("^FAIL") then print(path .. ": " .. line) end end
  local p, f = out:match("(%d+) passed, (%d+) failed")
  check(p and tonumber(p) > 20 and f == "0", path .. " raw contract: " .. (p or "?") .. " passed, " .. (f or "?") .. " failed")
end
check(opens >= 8, "on_open per connection: " .. opens)
check(#closes >= 16, "on_close / receive() end per connection: " .. #closes)

-- Pub/sub: two subscribers, one publishes; both get it once.
local script = [[
import sys; sys.path.insert(0, sys.argv[2]); import ws_raw
a = ws_raw.Conn(sys.argv[1], False, "/sub"); b = ws_raw.Conn(sys.argv[1], False, "/sub")
import time; time.sleep(0.2)
a.send(1, b"hello room")
fa, fb = a.frame(), b.frame()
print("ok" if fa and fb and fa[3] == b"hello room" == fb[3] else "bad %r %r" % (fa, fb))
a.send(8, b"\x0f\xa0"); print("close", a.close_code())
]]
local f = io.open(tmp .. "/sub.py", "w"); f:write(script); f:close()
local out = bg("python3 " .. tmp .. "/sub.py 127.0.0.1:" .. port .. " " .. root .. "/tests")
check(out:match("^ok\n"), "both subscribers got the publish: " .. out)
check(out:match("close 4000"), "close code echoed: " .. out)

-- A refused upgrade: plain GET of /ws.
out = bg("curl -s -i http://127.0.0.1:" .. port .. "/ws")
check(out:match("^HTTP/1.1 426"), "plain GET /ws is 426: " .. out:sub(1, 40))
srv:close()
run_until(function() return false end, 0)
print(passed .. " passed, " .. failed .. " failed")
