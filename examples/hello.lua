-- hello.lua — the myriad demo app in Lua (same contract as examples/hello.c):
--   hello.lua [--http ADDR]... [--fcgi ADDR]... [--https ADDR]... [--cert FILE --key FILE]...
--             [--threads N] [--backend NAME] [--max-body BYTES]
--             [--workers N] [--max-requests N] [--watchdog SECONDS] [--user NAME] [--status ADDR]...
--             [--access-log PATH] [--root DIR]
-- --access-log PATH logs each request (combined format) to PATH, "-" for stderr; SIGUSR1
-- opens PATH again (logrotate).
-- --root DIR: GET|HEAD /static/PATH serves DIR/PATH with myriad's static file handler
-- (myriad.files); without it /static/ is 404; a DIR that is not a directory exits 2.
-- --https serves HTTPS with the --cert/--key pairs (the first the default, the others by
-- SNI); a bad file: its name on stderr, exit 2. SIGHUP reloads the certificates. --https
-- under the supervisor is checked once, then loaded by each worker (SIGHUP: new workers).
-- Routes, on a myriad router: GET|HEAD / ; GET /hello/:name ; POST|PUT /echo ; GET /env ;
-- GET /stream?chunks=N&bytes=B ; GET /delay?ms=M ; GET /work?ms=M ; GET /stats (the loop's
-- counters as JSON) ; POST /form ; GET /pid (the serving process) ; GET /hang (with
-- --watchdog: a handler that never returns) ; GET /ws (a WebSocket echo: each message back as
-- the same kind; a plain GET is 426) ; else 404, or 405 with Allow.
-- With --workers N (or any supervisor flag) a supervisor (myriad.supervisor) binds the
-- listeners, prints them once and forks N workers: SIGHUP replaces them, SIGUSR2 re-executes
-- the interpreter and this script in place, SIGTERM drains them; unknown --user: exit 2.
-- /work is answered from a loop timer (a Lua state is single-threaded). --threads must
-- be 1 and --backend "epoll" (or absent) in this binding.
local myriad = require "myriad"

local function usage(msg)
  io.stderr:write("hello: ", msg, "\nusage: hello.lua [--http ADDR]... [--fcgi ADDR]... [--https ADDR]... [--cert FILE --key FILE]...\n",
    "       [--threads N] [--backend NAME] [--access-log PATH] [--max-body BYTES] [--root DIR]\n",
    "       [--workers N] [--max-requests N] [--watchdog SECONDS] [--user NAME] [--status ADDR]...\n")
  os.exit(2)
end

local http, fcgi, https, tls = {}, {}, {}, {}
local access_log
local files -- --root DIR: myriad.files(DIR)
local sup, status = nil, {}
local function int(v, lo, hi, msg)
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < lo or n > hi then usage(msg) end
  return math.floor(n)
end
local max_body = 64 * 1024 * 1024
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--http" or a == "--fcgi" or a == "--https" then
    if not v then usage("missing ADDR") end
    table.insert(a == "--http" and http or a == "--fcgi" and fcgi or https, v)
  elseif a == "--cert" then
    if not v then usage("missing FILE") end
    if #tls > 0 and not tls[#tls].key then usage("--cert FILE --key FILE go in pairs") end
    table.insert(tls, { cert = v })
  elseif a == "--key" then
    if not v then usage("missing FILE") end
    if #tls == 0 or tls[#tls].key then usage("--cert FILE --key FILE go in pairs") end
    tls[#tls].key = v
  elseif a == "--root" then
    if not v then usage("missing DIR") end
    local err
    files, err = myriad.files(v)
    if not files then usage("--root " .. err) end
  elseif a == "--access-log" then
    if not v then usage("missing PATH") end
    access_log = v
  elseif a == "--threads" then
    if v ~= "1" then usage("--threads: this binding runs one thread (start more processes)") end
  elseif a == "--backend" then
    if v ~= "epoll" and v ~= "" then usage("--backend: only epoll") end
  elseif a == "--workers" then
    sup = sup or {}
    sup.workers = int(v, 1, 1024, "--workers takes 1..1024")
  elseif a == "--max-requests" then
    sup = sup or {}
    sup.max_requests = int(v, 0, 2 ^ 53, "--max-requests takes a number")
  elseif a == "--watchdog" then
    sup = sup or {}
    sup.watchdog = int(v, 1, 86400, "--watchdog takes 1..86400 seconds")
  elseif a == "--user" then
    if not v then usage("missing NAME") end
    sup = sup or {}
    sup.user = v
  elseif a == "--status" then
    if not v then usage("missing ADDR") end
    sup = sup or {}
    table.insert(status, v)
  elseif a == "--max-body" then
    max_body = v and v:match("^%d+$") and tonumber(v)
    if not max_body or max_body < 1 then usage("--max-body takes a byte count") end
  else
    usage("unknown argument " .. tostring(a))
  end
  i = i + 2
end
if #tls > 0 and not tls[#tls].key then usage("--cert FILE --key FILE go in pairs") end
if #https > 0 and #tls == 0 then usage("--https needs --cert FILE --key FILE") end
-- No listener flag: the fds of socket activation (systemd; "fcgi" by name FastCGI, the
-- others HTTP), else the default address.
local inherited = false
if #http == 0 and #fcgi == 0 and #https == 0 then
  local ok, n = pcall(myriad.listen_fds)
  if not ok then io.stderr:write("hello: ", tostring(n), "\n"); os.exit(1) end
  if n > 0 then inherited = true else http = { "127.0.0.1:8080" } end
end

local function num(s, default, max)
  local n = tonumber(s)
  if not n or n < 0 or n ~= math.floor(n) then return default end
  return math.min(n, max)
end

-- /stats: the loop's counters, in the order of myriad_stats_t.
local STATS = { "iterations", "wait", "ctl", "read", "received", "write", "accept", "other",
  "wakeups", "accepted" }

local r = myriad.router()

r:get("/", function(req, res)
  res:header("Content-Type", "text/plain")
  res:finish("Hello, World!")
end)

-- The parameter comes percent-decoded ("a%2Fb" is "a/b").
r:get("/hello/:name", function(req, res)
  res:header("Content-Type", "text/plain")
  res:finish("Hello, " .. req.params.name .. "!")
end)

local function echo(req, res)
  local ct = req.headers["content-type"] or "application/octet-stream"
  if type(ct) == "table" then ct = ct[1] end
  local body = req:body() -- yields until the whole body is there
  if not body then return res:finish() end
  res:header("Content-Type", ct)
  res:finish(body)
end
r:post("/echo", echo)
r:put("/echo", echo)

r:get("/env", function(req, res)
  local env, names = req.env, {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do out[#out + 1] = k .. "=" .. env[k] .. "\n" end
  res:header("Content-Type", "text/plain")
  res:finish(table.concat(out))
end)

r:get("/stream", function(req, res)
  local args = req.args
  local chunks, bytes = num(args.chunks, 1, 100000), num(args.bytes, 1, 1048576)
  res:header("Content-Type", "text/plain")
  for n = 0, chunks - 1 do
    while res:queued() > 256 * 1024 do myriad.sleep(1) end -- a slow reader: wait
    if res:aborted() then return res:finish() end
    res:write(string.rep(string.char(97 + n % 26), bytes))
    res:flush()
    myriad.sleep(1)
  end
  res:finish()
end)

r:get("/delay", function(req, res)
  local ms = num(req.args.ms, 0, 60000)
  myriad.sleep(ms)
  res:header("Content-Type", "text/plain")
  res:finish("delayed " .. ms)
end)

r:get("/stats", function(req, res)
  local st, out = myriad.stats(), {}
  for _, k in ipairs(STATS) do out[#out + 1] = string.format("%q:%d", k, st[k]) end
  res:header("Content-Type", "application/json")
  res:finish("{" .. table.concat(out, ",") .. "}\n")
end)

r:get("/work", function(req, res)
  local ms = num(req.args.ms, 0, 60000)
  myriad.timer(ms, function()
    res:header("Content-Type", "text/plain")
    res:finish("worked " .. ms)
  end)
end)

-- POST /form: one line per field in the order received, "NAME=VALUE", or for a file
-- "NAME: FILENAME (SIZE bytes)" (file data is counted as it streams in, never kept).
r:post("/form", function(req, res)
  local out, value, part, size = {}, nil, nil, 0
  local ok, err, status = req:form(function(ev, a)
    if ev == "part" then
      part, size, value = a, 0, {}
    elseif ev == "data" then
      if part.filename then size = size + #a else value[#value + 1] = a end
    elseif ev == "part_end" then
      if part.filename then
        out[#out + 1] = string.format("%s: %s (%d bytes)\n", part.name, part.filename, size)
      else
        out[#out + 1] = part.name .. "=" .. table.concat(value) .. "\n"
      end
    end
  end)
  res:header("Content-Type", "text/plain")
  if not ok then
    if status == 499 then return res:finish() end -- the client went away
    return res:status(status):finish(err)
  end
  res:finish(table.concat(out))
end)

-- The raw (still percent-encoded) path below /static/: the file handler decodes and checks it.
if files then
  r:get("/static/*path", function(req, res)
    files:serve(req, req.path:sub(#"/static/" + 1))
  end)
end

-- GET /ws: each text or binary message back as the same kind (pings, closes and
-- permessage-deflate are the library's); a request that is not a valid upgrade is answered
-- (426, 400...) by req:websocket, which then returns nil.
r:get("/ws", function(req, res)
  req:websocket { on_message = function(ws, data, binary) ws:send(data, binary) end }
end)

r:get("/pid", function(req, res)
  res:header("Content-Type", "text/plain")
  res:finish(tostring(myriad.pid()))
end)

if sup and sup.watchdog then
  r:get("/hang", function()
    while true do end -- stuck for good: the supervisor's watchdog kills this worker
  end)
end

-- sd_notify when a service manager listens (NOTIFY_SOCKET); a failure is not fatal.
local function notify(state)
  local sent, err = myriad.notify(state)
  if sent == nil then io.stderr:write("hello: sd_notify: ", err, "\n") end
end

-- Serves the listeners until SIGTERM/SIGINT has drained them; a worker (supervised) prints
-- nothing and leaves readiness and the watchdog to its supervisor.
local function serve(h, f, hs, standalone)
  local tls_on = #hs > 0
  local ok, srv = pcall(myriad.server, { http = h, fcgi = f, inherited = standalone and inherited, handler = r,
    https = tls_on and hs or nil, tls = tls_on and tls or nil, max_body = max_body, access_log = access_log })
  if not ok then
    io.stderr:write("hello: ", tostring(srv), "\n")
    -- A bad certificate, key or access log file is a configuration error: exit 2, before serving.
    local e = tostring(srv)
    os.exit((e:find("^tls: ") or e:find("access_log", 1, true)) and 2 or 1)
  end
  if tls_on then
    myriad.signal("SIGHUP", function()
      local ok2, err = pcall(srv.reload_tls, srv, tls)
      io.stderr:write("hello: ", ok2 and "certificates reloaded" or ("SIGHUP: " .. tostring(err) .. "; certificates not reloaded"), "\n")
    end)
  end
  if standalone then
    local listening = {}
    for _, l in ipairs(srv:addresses()) do
      print("listening " .. l.proto .. " " .. l.addr)
      listening[#listening + 1] = l.proto .. " " .. l.addr
    end
    io.stdout:flush()
    notify("READY=1\nSTATUS=serving " .. table.concat(listening, ", ") .. " (1 thread)")
    myriad.watchdog() -- WATCHDOG=1 from the loop's timers when WATCHDOG_USEC asks for it
  end
  local stopping = false
  local function stop()
    if stopping then return end
    stopping = true
    if standalone then notify("STOPPING=1\nSTATUS=draining") end
    srv:close(function() myriad.stop() end)
  end
  myriad.signal("SIGTERM", stop)
  myriad.signal("SIGINT", stop)
  myriad.signal("SIGUSR1", function()
    local ok2, err = pcall(srv.reopen_logs, srv)
    if not ok2 then io.stderr:write("hello: reopening the access log: ", tostring(err), "\n") end
  end)
  myriad.run()
  return 0
end

if not sup then
  serve(http, fcgi, https, true)
  return
end
local ok, s = pcall(myriad.supervisor, sup)
if not ok then
  io.stderr:write("hello: ", tostring(s), "\n")
  os.exit(2)
end
local function bind(proto, list)
  for _, a in ipairs(list) do
    local ok2, got = pcall(s.listen, s, proto, a)
    if not ok2 then
      io.stderr:write("hello: ", tostring(got), "\n")
      os.exit(1)
    end
    print("listening " .. proto .. " " .. got)
  end
end
bind("http", http)
bind("fcgi", fcgi)
if #https > 0 then
  -- Checked here (a bad file: exit 2 before serving), loaded again by every new worker.
  local ok2, err = pcall(myriad.check_tls, tls)
  if not ok2 then
    io.stderr:write("hello: ", tostring(err), "\n")
    os.exit(2)
  end
  bind("https", https)
end
if inherited then -- socket-activated: the supervisor takes the fds, shared by every worker
  local ok2, got = pcall(s.listen_inherited, s)
  if not ok2 then
    io.stderr:write("hello: ", tostring(got), "\n")
    os.exit(1)
  end
  for _, l in ipairs(got) do print("listening " .. l.proto .. " " .. l.addr) end
end
for _, a in ipairs(status) do print("listening status " .. s:status_listen(a)) end
io.stdout:flush()
os.exit(s:run(function(w) return serve(w.http, w.fcgi, w.https, false) end))
