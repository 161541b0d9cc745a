--- Inline drafts for neovim without vim.lsp.inline_completion (<= 0.11): request
--- textDocument/inlineCompletion while typing, debounced, cancelling the request it supersedes,
--- and draw the draft as ghost text (extmarks) at the cursor.
local draft = require('kvsplice.draft')

local api = vim.api
local M = {}

local ns = api.nvim_create_namespace('kvsplice')

api.nvim_set_hl(0, 'KvspliceGhost', { default = true, link = 'Comment' })
api.nvim_set_hl(0, 'KvspliceGhostIndex', { default = true, link = 'NonText' })

local TRIGGER_AUTOMATIC = 2
-- Replies to a request that was superseded or outrun by typing; expected while typing.
local QUIET_ERRORS = { [-32800] = true, [-32801] = true }

---@class kvsplice.Ghost
---@field bufnr integer
---@field client_id integer
---@field debounce_ms integer
---@field timer uv.uv_timer_t
---@field request_id integer|nil the request in flight
---@field drafts kvsplice.Draft[]|nil
---@field index integer the draft shown
local Ghost = {}
Ghost.__index = Ghost

---@type table<integer, kvsplice.Ghost>
local active = {}

local function cursor_and_line()
  local row, col = unpack(api.nvim_win_get_cursor(0))
  return { row - 1, col }, api.nvim_get_current_line()
end

function Ghost:client()
  return vim.lsp.get_client_by_id(self.client_id)
end

function Ghost:cancel()
  self.timer:stop()
  local client = self:client()
  if self.request_id and client then
    client:cancel_request(self.request_id)
  end
  self.request_id = nil
end

function Ghost:clear()
  self:cancel()
  self.drafts = nil
  api.nvim_buf_clear_namespace(self.bufnr, ns, 0, -1)
end

--- The shown draft and what is left of it to type, dropping the drafts once typing has left them.
---@return kvsplice.Draft|nil, string|nil
function Ghost:current()
  if not self.drafts or api.nvim_get_current_buf() ~= self.bufnr then
    return nil
  end
  local cursor, line = cursor_and_line()
  local d = self.drafts[self.index]
  local rest = draft.remaining(d, line, cursor)
  if not rest then
    self.drafts = nil
  end
  return rest and d, rest
end

--- Redraws the ghost text; true when a draft is visible.
function Ghost:render()
  api.nvim_buf_clear_namespace(self.bufnr, ns, 0, -1)
  local d, rest = self:current()
  if not d then
    return false
  end
  local lines = vim.split(rest, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], 'KvspliceGhost' } }
  end
  local virt_text = { { lines[1], 'KvspliceGhost' } }
  if #self.drafts > 1 then
    local last = #virt_lines > 0 and virt_lines[#virt_lines] or virt_text
    last[#last + 1] = { (' (%d/%d)'):format(self.index, #self.drafts), 'KvspliceGhostIndex' }
  end
  local cursor = cursor_and_line()
  api.nvim_buf_set_extmark(self.bufnr, ns, cursor[1], cursor[2], {
    virt_text = virt_text,
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
  return true
end

function Ghost:on_result(err, result, id, tick)
  if id ~= self.request_id then
    return
  end
  self.request_id = nil
  if err then
    if not QUIET_ERRORS[err.code] then
      vim.notify_once(('kvsplice: inline completion failed: %s'):format(err.message), vim.log.levels.WARN)
    end
    return
  end
  local client = self:client()
  if not client or api.nvim_get_current_buf() ~= self.bufnr
    or api.nvim_buf_get_changedtick(self.bufnr) ~= tick
    or not vim.startswith(api.nvim_get_mode().mode, 'i')
  then
    return
  end
  local cursor, line = cursor_and_line()
  local drafts = {}
  for _, item in ipairs(result and (result.items or result) or {}) do
    drafts[#drafts + 1] = draft.from_item(item, line, cursor, client.offset_encoding)
  end
  drafts = draft.distinct(drafts, line, cursor)
  -- "Nothing new here" keeps a draft that is still being accepted line by line.
  if #drafts > 0 then
    self.drafts, self.index = drafts, 1
  end
  self:render()
end

function Ghost:request()
  local client = self:client()
  if not client or api.nvim_get_current_buf() ~= self.bufnr
    or not vim.startswith(api.nvim_get_mode().mode, 'i')
  then
    return
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = TRIGGER_AUTOMATIC }
  local tick = api.nvim_buf_get_changedtick(self.bufnr)
  local ok, id -- declared apart so that the callback can see the id
  ok, id = client:request('textDocument/inlineCompletion', params, function(err, result)
    self:on_result(err, result, id, tick)
  end, self.bufnr)
  self.request_id = ok and id or nil
end

--- Keeps a draft that still matches what was typed and asks for a fresh one after a pause. The
--- request in flight is cancelled at once: its answer is for a buffer or cursor that is gone.
function Ghost:on_edit()
  self:cancel()
  self:render()
  self.timer:start(self.debounce_ms, 0, vim.schedule_wrap(function()
    self:request()
  end))
end

---@param client vim.lsp.Client
---@param bufnr integer
---@param opts { debounce_ms: integer }
function M.attach(client, bufnr, opts)
  if active[bufnr] then
    return
  end
  local self = setmetatable({
    bufnr = bufnr,
    client_id = client.id,
    debounce_ms = opts.debounce_ms,
    timer = assert(vim.uv.new_timer()),
    index = 1,
  }, Ghost)
  active[bufnr] = self
  local group = api.nvim_create_augroup(('kvsplice.ghost.%d'):format(bufnr), { clear = true })
  api.nvim_create_autocmd({ 'InsertEnter', 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      self:on_edit()
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      self:clear()
    end,
  })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.data.client_id == self.client_id then
        M.detach(bufnr)
      end
    end,
  })
end

function M.detach(bufnr)
  local self = active[bufnr]
  if not self then
    return
  end
  active[bufnr] = nil
  self:clear()
  self.timer:close()
  api.nvim_del_augroup_by_name(('kvsplice.ghost.%d'):format(bufnr))
end

--- Inserts the shown draft (or its next line) at the cursor and moves past it.
---@param bufnr integer
---@param line_only boolean
---@return boolean accepted
function M.accept(bufnr, line_only)
  local self = active[bufnr]
  if not self then
    return false
  end
  local d, rest = self:current()
  if not d then
    return false
  end
  local text = line_only and draft.first_line(rest) or rest
  local lines = vim.split(text, '\n', { plain = true })
  local row, col = unpack(api.nvim_win_get_cursor(0))
  -- Only a whole draft replaces the text it covers after the cursor.
  local tail = (line_only and #text < #rest) and 0 or d.tail
  api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, col + tail, lines)
  api.nvim_win_set_cursor(0, { row + #lines - 1, (#lines == 1 and col or 0) + #lines[#lines] })
  if not line_only then
    self:clear()
  end
  return true
end

---@param bufnr integer
---@param count integer drafts to move by; negative moves back
---@return boolean moved
function M.cycle(bufnr, count)
  local self = active[bufnr]
  if not (self and self:current()) then
    return false
  end
  self.index = (self.index - 1 + count) % #self.drafts + 1
  return self:render()
end

---@param bufnr integer
---@return boolean dismissed
function M.dismiss(bufnr)
  local self = active[bufnr]
  local visible = self and self:current() ~= nil
  if self then
    self:clear()
  end
  return visible or false
end

return M
