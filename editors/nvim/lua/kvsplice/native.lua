--- Inline drafts through neovim's own vim.lsp.inline_completion (0.12+), behind the same small
--- interface as kvsplice.ghost so the keymaps do not care which one runs.
local draft = require('kvsplice.draft')

local ic = vim.lsp.inline_completion
local M = {}

function M.attach(_, bufnr, _)
  ic.enable(true, { bufnr = bufnr })
end

function M.detach(bufnr)
  ic.enable(false, { bufnr = bufnr })
end

--- Inserts what `item` has beyond the text already typed, up to the end of its first line.
local function accept_line(item)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local line = vim.api.nvim_get_current_line()
  local start_col = item.range and item.range.start.col or col
  local typed = line:sub(start_col + 1, col)
  local text = type(item.insert_text) == 'string' and item.insert_text or item.insert_text.value
  if not vim.startswith(text, typed) then
    return
  end
  local lines = vim.split(draft.first_line(text:sub(#typed + 1)), '\n', { plain = true })
  vim.api.nvim_buf_set_text(0, row - 1, col, row - 1, col, lines)
  vim.api.nvim_win_set_cursor(0, { row + #lines - 1, (#lines == 1 and col or 0) + #lines[#lines] })
end

function M.accept(bufnr, line_only)
  return ic.get({ bufnr = bufnr, on_accept = line_only and accept_line or nil })
end

function M.cycle(bufnr, count)
  ic.select({ bufnr = bufnr, count = count })
  return true
end

-- get() with a no-op on_accept is the public way to drop the shown item and its pending requests.
function M.dismiss(bufnr)
  return ic.get({ bufnr = bufnr, on_accept = function() end })
end

return M
