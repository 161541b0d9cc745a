--- :checkhealth kvsplice: the server command, the server's version and the model it runs.
local M = {}

local function version_from_cli(exe)
  local ok, result = pcall(function()
    return vim.system({ exe, '--version' }, { text = true }):wait(10000)
  end)
  if ok and result.code == 0 then
    return vim.trim(result.stdout)
  end
end

function M.check()
  local health = vim.health
  local kvsplice = require('kvsplice')
  health.start('kvsplice')

  health.info(('neovim %s: drafts shown by %s'):format(
    tostring(vim.version()),
    vim.fn.has('nvim-0.12') == 1 and 'vim.lsp.inline_completion' or 'kvsplice (extmark ghost text)'
  ))
  if not kvsplice.options then
    health.warn('setup() has not run, so no server starts', { 'add require("kvsplice").setup() to your config' })
  end
  local opts = kvsplice.options or require('kvsplice.config').resolve()

  local exe = vim.fn.exepath(opts.cmd[1])
  if exe == '' then
    health.error(('server command "%s" not found'):format(opts.cmd[1]), {
      kvsplice.INSTALL .. ', in an environment on $PATH',
      'or give the full path: require("kvsplice").setup({ cmd = { "/path/to/kvsplice", "serve" } })',
    })
    return
  end
  health.ok(('server command: %s (%s)'):format(table.concat(opts.cmd, ' '), exe))

  local client = kvsplice.client()
  local info = client and client.server_info
  local version = info and ('%s %s'):format(info.name, info.version or '') or version_from_cli(exe)
  if version then
    health.ok('server version: ' .. vim.trim(version))
  else
    health.warn('could not read the server version (`' .. exe .. ' --version` failed)')
  end

  local bufnr = client and next(client.attached_buffers)
  if not bufnr then
    health.info(('model: %s (no server running; it starts with a buffer of filetype %s)'):format(
      opts.init_options.model or 'the server default', table.concat(opts.filetypes, ', ')))
    return
  end
  local response = client:request_sync('kvsplice/stats', { uri = vim.uri_from_bufnr(bufnr) }, 5000, bufnr)
  local stats = response and response.result and require('kvsplice.progress').settled(response.result)
  if stats and stats.error then
    health.error(('model: %s failed to load: %s'):format(stats.model, stats.error),
      { 'set init_options.model to a packaged name (kvsplice models list), a model folder or a Hugging Face id' })
  elseif stats then
    health.ok(('model: %s on %s (%s)%s'):format(stats.model, stats.device, stats.dtype,
      stats.ready and '' or ', still loading'))
  else
    health.warn('model: the server did not answer kvsplice/stats: '
      .. (response and response.err and response.err.message or 'timed out'))
  end
end

return M
