--- Options for require("kvsplice").setup(). Names follow vim.lsp.ClientConfig where one exists
--- (cmd, init_options, filetypes); the rest are the plugin's own.
local M = {}

M.defaults = {
  --- The server command; `kvsplice` must be on PATH unless this is a full path.
  cmd = { 'kvsplice', 'serve' },
  --- Sent as initializationOptions and, on later setup() calls, as didChangeConfiguration:
  --- model, device, dtype, strategy, drafts, max_lines, max_new_tokens, languages.
  init_options = vim.empty_dict(),
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact',
    'rust', 'go', 'java', 'c', 'cpp', 'lua', 'sh',
  },
  --- Wait this long after the last keystroke before asking for a draft (neovim <= 0.11; 0.12's
  --- vim.lsp.inline_completion has its own debounce).
  debounce_ms = 75,
  --- Echo the server's loading and encoding progress as it arrives; false leaves it to a
  --- statusline showing require("kvsplice").status().
  progress = true,
  --- Insert-mode keys; false leaves a key unmapped. accept falls back to a literal <Tab>.
  keymaps = {
    accept = '<Tab>',
    accept_line = '<M-l>',
    next = '<M-]>',
    prev = '<M-[>',
    dismiss = '<C-]>',
  },
}

--- Merges user options over the defaults; list options (cmd, filetypes) replace, not merge.
---@param opts table|nil
---@return table
function M.resolve(opts)
  opts = opts or {}
  vim.validate('cmd', opts.cmd, 'table', true)
  vim.validate('init_options', opts.init_options, 'table', true)
  vim.validate('filetypes', opts.filetypes, 'table', true)
  vim.validate('debounce_ms', opts.debounce_ms, 'number', true)
  vim.validate('progress', opts.progress, 'boolean', true)
  vim.validate('keymaps', opts.keymaps, 'table', true)
  local resolved = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts)
  resolved.cmd = opts.cmd or M.defaults.cmd
  resolved.filetypes = opts.filetypes or M.defaults.filetypes
  return resolved
end

return M
