-- Runs a spec inside a live headless neovim. Cases run in order, in a coroutine that yields to
-- the main loop whenever it waits, so typed keys, autocommands, timers and LSP replies are
-- processed exactly as in an interactive session. A case starts in the state the previous one
-- left (mode, buffer, cursor). Driven by tests/test_nvim_plugin.py:
--   KVSPLICE_TEST_SPEC  a Lua file returning function(T) -> { { name, fn }, ... }
--   KVSPLICE_TEST_OUT   where the JSON results go; neovim quits afterwards
local T = {}
local api = vim.api
local runner

local function resume_after(ms)
  vim.defer_fn(function()
    local ok, err = coroutine.resume(runner)
    if not ok then
      io.stderr:write('harness: ' .. tostring(err) .. '\n')
      vim.cmd('cquit 2')
    end
  end, ms)
end

--- Yields to the main loop for `ms`.
function T.sleep(ms)
  resume_after(ms)
  coroutine.yield()
end

--- Waits until cond() returns a truthy value, and returns it.
function T.wait(what, cond, timeout_ms)
  local deadline = vim.uv.now() + (timeout_ms or 10000)
  while true do
    local value = cond()
    if value then
      return value
    end
    if vim.uv.now() > deadline then
      error('timed out waiting for ' .. what, 2)
    end
    T.sleep(10)
  end
end

--- Types keys (<> notation) as a user would, through the input queue.
function T.keys(keys)
  api.nvim_input(keys)
  T.sleep(10)
end

function T.eq(expected, actual, what)
  if not vim.deep_equal(expected, actual) then
    error(('%s: expected %s, got %s'):format(what or 'value', vim.inspect(expected), vim.inspect(actual)), 2)
  end
end

function T.truthy(value, what)
  if not value then
    error(what .. ': ' .. vim.inspect(value), 2)
  end
  return value
end

--- The ghost text kvsplice draws in `bufnr` (virtual text, then virtual lines), or nil.
function T.ghost(bufnr)
  local ns = api.nvim_get_namespaces().kvsplice
  local marks = ns and api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true }) or {}
  if #marks == 0 then
    return nil
  end
  local details = marks[1][4]
  local function join(chunks)
    local parts = {}
    for _, chunk in ipairs(chunks) do
      if chunk[2] == 'KvspliceGhost' then
        parts[#parts + 1] = chunk[1]
      end
    end
    return table.concat(parts)
  end
  local lines = { join(details.virt_text or {}) }
  for _, chunks in ipairs(details.virt_lines or {}) do
    lines[#lines + 1] = join(chunks)
  end
  return table.concat(lines, '\n')
end

--- Messages given to vim.notify while fn runs (fn may wait).
function T.notifications(fn)
  local seen, notify = {}, vim.notify
  vim.notify = function(msg, level)
    seen[#seen + 1] = { msg = msg, level = level }
  end
  local ok, err = pcall(fn, seen)
  vim.notify = notify
  if not ok then
    error(err, 0)
  end
  return seen
end

--- Messages echoed with nvim_echo while fn runs (fn may wait), as plain strings.
function T.echoes(fn)
  local seen, echo = {}, api.nvim_echo
  api.nvim_echo = function(chunks, ...)
    seen[#seen + 1] = table.concat(vim.tbl_map(function(chunk) return chunk[1] end, chunks))
    return echo(chunks, ...)
  end
  local ok, err = pcall(fn, seen)
  api.nvim_echo = echo
  if not ok then
    error(err, 0)
  end
  return seen
end

--- Runs :KvspliceStats and returns the message it shows.
function T.stats_message()
  local seen = T.notifications(function(seen)
    vim.cmd('KvspliceStats')
    T.wait('the stats', function() return #seen > 0 end)
  end)
  return seen[1].msg
end

--- A new scratch file of `filetype` holding `lines`, shown in the current window.
function T.open(filetype, lines)
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, 'p')
  vim.cmd.edit(vim.fs.joinpath(dir, 'case'))
  api.nvim_buf_set_lines(0, 0, -1, false, lines)
  vim.bo.filetype = filetype
  return api.nvim_get_current_buf()
end

local cases = dofile(assert(os.getenv('KVSPLICE_TEST_SPEC'), 'KVSPLICE_TEST_SPEC is not set'))(T)

runner = coroutine.create(function()
  local results = {}
  for _, case in ipairs(cases) do
    local started = vim.uv.hrtime()
    vim.v.errmsg = ''
    local ok, err = xpcall(case[2], debug.traceback)
    -- An error in a mapping, autocommand or callback only reaches v:errmsg.
    if ok and vim.v.errmsg ~= '' then
      ok, err = false, vim.v.errmsg
    end
    results[#results + 1] = {
      name = case[1],
      ok = ok,
      error = (not ok) and tostring(err) or nil,
      ms = math.floor((vim.uv.hrtime() - started) / 1e6),
    }
  end
  local out = assert(io.open(assert(os.getenv('KVSPLICE_TEST_OUT')), 'w'))
  out:write(vim.json.encode(results))
  out:close()
  vim.cmd('qall!')
end)

resume_after(0)
