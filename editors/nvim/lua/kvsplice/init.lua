--- kvsplice for neovim: starts `kvsplice serve` for the configured filetypes and shows its
--- next-line drafts inline. require("kvsplice").setup() needs no options when `kvsplice` is on PATH.
local config = require('kvsplice.config')
local progress = require('kvsplice.progress')

local api = vim.api
local M = {}

M.NAME = 'kvsplice'
--- What the README says: the server installs from a clone (no package index has kvsplice).
M.INSTALL = 'run "pip install ." in a clone of the kvsplice repository'
local STATS = 'kvsplice/stats'

---@type table|nil the resolved options once setup() ran
M.options = nil
M.enabled = true

--- neovim 0.12 shows inline completions itself; older versions get the extmark client.
function M.backend()
  return require(vim.fn.has('nvim-0.12') == 1 and 'kvsplice.native' or 'kvsplice.ghost')
end

---@return vim.lsp.Client|nil
function M.client(bufnr)
  return vim.lsp.get_clients({ name = M.NAME, bufnr = bufnr })[1]
end

--- Insert-mode keys map to these; each returns whether it acted, so <Tab> can fall through.
M.actions = {
  accept = function(bufnr) return M.backend().accept(bufnr, false) end,
  accept_line = function(bufnr) return M.backend().accept(bufnr, true) end,
  next = function(bufnr) return M.backend().cycle(bufnr, 1) end,
  prev = function(bufnr) return M.backend().cycle(bufnr, -1) end,
  dismiss = function(bufnr) return M.backend().dismiss(bufnr) end,
}

for name, action in pairs(M.actions) do
  M[name] = function(bufnr)
    return action(bufnr or api.nvim_get_current_buf())
  end
end

local function set_keymaps(bufnr, keymaps)
  for name, lhs in pairs(keymaps) do
    if lhs then
      vim.keymap.set('i', lhs, function()
        if not M.actions[name](bufnr) then
          -- No draft shown: the key does what it does without kvsplice (<Tab> stays <Tab>).
          api.nvim_feedkeys(api.nvim_replace_termcodes(lhs, true, false, true), 'n', false)
        end
      end, { buffer = bufnr, desc = 'kvsplice: ' .. name:gsub('_', ' ') })
    end
  end
end

local function on_exit(code, signal)
  vim.schedule(function()
    progress.clear() -- what was in progress ended with the server
    vim.cmd.redrawstatus()
  end)
  if code ~= 0 or (signal ~= 0 and signal ~= 15) then
    vim.schedule(function()
      vim.notify(
        ('kvsplice: the server exited (code %d, signal %d). Run :checkhealth kvsplice; the server\'s stderr is in %s')
          :format(code, signal, vim.lsp.get_log_path()),
        vim.log.levels.ERROR
      )
    end)
  end
end

local function missing_server_message(exe)
  if exe:find('/', 1, true) then
    return ('kvsplice: "%s" does not exist or is not executable. Pass the full path of an installed kvsplice ("which kvsplice" in its environment), or install the server (%s).')
      :format(exe, M.INSTALL)
  end
  return ('kvsplice: "%s" was not found on $PATH. Install the server into an environment on $PATH (%s), or pass its full path: require("kvsplice").setup({ cmd = { "/path/to/kvsplice", "serve" } }).')
    :format(exe, M.INSTALL)
end

local function file_name(bufnr)
  return vim.fs.basename(api.nvim_buf_get_name(bufnr))
end

--- Shows progress as it arrives: in the statusline (M.status) and, unless `progress = false`,
--- as a message ("kvsplice: encoding strutils.py: 1200/4900 tokens (24%)").
local function on_progress(task, value)
  vim.cmd.redrawstatus()
  if not M.options.progress then
    return
  end
  local text = progress.describe(task)
  if value.kind == 'end' then
    text = type(value.message) == 'string' and value.message or ('%s ready'):format(task.subject)
  end
  api.nvim_echo({ { 'kvsplice: ' .. text } }, false, {})
end

--- Starts (or reuses) the one kvsplice server and attaches `bufnr` to it.
---@param bufnr integer
---@return integer|nil client_id
function M.start(bufnr)
  local opts = assert(M.options, 'kvsplice: call require("kvsplice").setup() first')
  if vim.fn.executable(opts.cmd[1]) ~= 1 then
    vim.notify_once(missing_server_message(opts.cmd[1]), vim.log.levels.ERROR)
    return nil
  end
  return vim.lsp.start({
    name = M.NAME,
    cmd = opts.cmd,
    init_options = opts.init_options,
    settings = { kvsplice = opts.init_options },
    root_dir = vim.fs.root(bufnr, { '.git' }) or vim.fn.getcwd(),
    -- Drafts arrive inline only: a completion plugin asking kvsplice too would show them twice,
    -- and the server lets a document's newest request supersede the one in flight.
    on_init = function(client)
      client.server_capabilities.completionProvider = nil
    end,
    on_exit = on_exit,
  }, {
    bufnr = bufnr,
    -- One server for every buffer and project: each server process holds its own model.
    reuse_client = function(client, cfg)
      return client.name == cfg.name and not client:is_stopped()
    end,
  })
end

---@param opts table|nil see kvsplice.config.defaults
function M.setup(opts)
  local previous = M.options
  M.options = config.resolve(opts)
  local group = api.nvim_create_augroup('kvsplice', { clear = true })

  api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == M.NAME then
        if M.enabled then
          M.backend().attach(client, args.buf, M.options)
        end
        set_keymaps(args.buf, M.options.keymaps)
      end
    end,
  })
  api.nvim_create_autocmd('LspProgress', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      local params = args.data.params
      if client and client.name == M.NAME and type(params.value) == 'table' then
        local task = progress.update(params.token, params.value)
        if task then
          on_progress(task, params.value)
        end
      end
    end,
  })
  api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = M.options.filetypes,
    callback = function(args)
      M.start(args.buf)
    end,
  })

  -- A second setup() reconfigures the running server instead of restarting it.
  local client = M.client()
  if client and previous and not vim.deep_equal(previous.init_options, M.options.init_options) then
    client.settings = { kvsplice = M.options.init_options }
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end

  -- setup() may run after buffers of the wanted filetypes are already open (lazy loading).
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(M.options.filetypes, vim.bo[bufnr].filetype) then
      M.start(bufnr)
    end
  end
end

--- Turns drafts off or back on in every attached buffer. The server keeps running, and with it
--- the caches it has built.
function M.toggle()
  M.enabled = not M.enabled
  local client = M.client()
  for bufnr in pairs(client and client.attached_buffers or {}) do
    if M.enabled then
      M.backend().attach(client, bufnr, M.options)
    else
      M.backend().detach(bufnr)
    end
  end
  vim.notify(('kvsplice: drafts %s'):format(M.enabled and 'on' or 'off'))
end

--- For a statusline: what drafts in the buffer wait for ("kvsplice: encoding 24%",
--- "kvsplice: loading smollm2-135m 4 s"), or "" when nothing.
--- e.g. vim.o.statusline = "%f %{v:lua.require'kvsplice'.status()}"
---@param bufnr integer|nil
---@return string
function M.status(bufnr)
  local name = file_name(bufnr or api.nvim_get_current_buf())
  local task = progress.current(name)
  return task and 'kvsplice: ' .. progress.short(task, name) or ''
end

--- One document's figures from a kvsplice/stats answer, with the server-wide model, device,
--- dtype, ready and error beside them (the document's own `ready` becomes `cache_ready`).
---@param result table {model, device, dtype, ready, error, documents = {{uri, tokens, ...}}}
---@param uri string
---@return table|nil
function M.document_stats(result, uri)
  for _, doc in ipairs(result.documents or {}) do
    if doc.uri == uri then
      local stats = vim.deepcopy(doc)
      stats.cache_ready = doc.ready ~= false
      for _, key in ipairs({ 'model', 'device', 'dtype', 'ready', 'error' }) do
        stats[key] = result[key]
      end
      return stats
    end
  end
end

--- Asks the server for `bufnr`'s cache figures.
---@param bufnr integer
---@param callback fun(err: lsp.ResponseError|nil, stats: table|nil)
function M.stats(bufnr, callback)
  local client = M.client(bufnr)
  if not client then
    callback({ code = 0, message = 'no kvsplice server is attached to this buffer' }, nil)
    return
  end
  local uri = vim.uri_from_bufnr(bufnr)
  client:request(STATS, { uri = uri }, function(err, result)
    callback(err, result and M.document_stats(progress.settled(result), uri))
  end, bufnr)
end

--- The document's cache: "encoding 1200/4900 tokens" while the server encodes it.
local function cache_state(stats)
  local e = stats.encoding
  if type(e) == 'table' then
    return ('encoding %d/%d tokens'):format(e.done, e.total)
  end
  if stats.ready == false then
    return 'waiting for the model'
  end
  return stats.cached and stats.cache_ready ~= false and 'ready' or 'none yet'
end

local STATS_ROWS = {
  { 'model', 'model' }, { 'device', 'device' }, { 'dtype', 'dtype' }, { 'cache', cache_state },
  { 'tokens cached', 'tokens' },
  { 'reused (last edit)', 'reused' }, { 'encoded (last edit)', 'encoded' },
  { 'rotated (last edit)', 'rotated' }, { 'stale', 'stale' },
  { 'last patch ms', 'last_patch_ms' }, { 'last draft ms', 'last_draft_ms' },
}

--- The stats as aligned "label  value" lines.
---@param stats table
---@return string[]
function M.format_stats(stats)
  local lines = {}
  for _, row in ipairs(STATS_ROWS) do
    local value = type(row[2]) == 'function' and row[2](stats) or stats[row[2]]
    if type(value) == 'number' and value ~= math.floor(value) then
      value = ('%.1f'):format(value)
    end
    lines[#lines + 1] = ('%-20s %s'):format(row[1], value == nil and '–' or tostring(value))
  end
  if stats.error then
    lines[#lines + 1] = ('%-20s %s'):format('model failed', stats.error)
  end
  return lines
end

--- :KvspliceStats
function M.show_stats()
  local bufnr = api.nvim_get_current_buf()
  M.stats(bufnr, function(err, stats)
    if err or not stats then
      vim.notify('kvsplice: ' .. (err and err.message or 'no stats'), vim.log.levels.WARN)
      return
    end
    vim.notify(table.concat(M.format_stats(stats), '\n'))
  end)
end

return M
