-- Commands only; nothing starts until require("kvsplice").setup() runs.
if vim.g.loaded_kvsplice then
  return
end
vim.g.loaded_kvsplice = true

vim.api.nvim_create_user_command('KvspliceStats', function()
  require('kvsplice').show_stats()
end, { desc = "kvsplice: this buffer's KV cache figures" })

vim.api.nvim_create_user_command('KvspliceToggle', function()
  require('kvsplice').toggle()
end, { desc = 'kvsplice: drafts on/off' })
