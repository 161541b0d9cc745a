--- Drafts as text: where an InlineCompletionItem sits in the buffer, what of it is still to be
--- typed, and how much one "accept line" takes. No buffer or window access here; callers pass
--- the line and cursor, so this is tested without a server.
local M = {}

---@class kvsplice.Draft
---@field row integer 0-based row the item's range starts on (the cursor row)
---@field col integer byte column the item's range starts at
---@field tail integer bytes after the cursor that the item replaces (e.g. an auto-closed `)`)
---@field text string the item's insertText

--- Pins an item to byte coordinates. Items whose range leaves the cursor line, starts after the
--- cursor or ends before it, and snippet items, are not drafts this client can show.
---@param item lsp.InlineCompletionItem
---@param line string text of the cursor line
---@param cursor [integer, integer] 0-based row, byte column
---@param encoding string the client's offset encoding ('utf-8', 'utf-16', 'utf-32')
---@return kvsplice.Draft|nil
function M.from_item(item, line, cursor, encoding)
  if type(item.insertText) ~= 'string' then
    return nil
  end
  local row, col = cursor[1], cursor[2]
  local start_col, end_col = col, col
  if item.range then
    local s, e = item.range.start, item.range['end']
    if s.line ~= row or e.line ~= row then
      return nil
    end
    start_col = vim.str_byteindex(line, encoding, s.character, false)
    end_col = vim.str_byteindex(line, encoding, e.character, false)
  end
  if start_col > col or end_col < col then
    return nil
  end
  return { row = row, col = start_col, tail = end_col - col, text = item.insertText }
end

--- What of the draft is still to be typed at the cursor, or nil when the typing since the
--- draft arrived left it (another line, text that is not its prefix) or finished it.
---@param draft kvsplice.Draft
---@param line string
---@param cursor [integer, integer]
---@return string|nil
function M.remaining(draft, line, cursor)
  if cursor[1] ~= draft.row or cursor[2] < draft.col then
    return nil
  end
  local typed = line:sub(draft.col + 1, cursor[2])
  if not vim.startswith(draft.text, typed) or #typed == #draft.text then
    return nil
  end
  return draft.text:sub(#typed + 1)
end

--- One line's worth of `rest`: up to its first line break, or, when `rest` begins on the next
--- line, that line break and the next line. Repeating it walks a draft line by line.
---@param rest string
---@return string
function M.first_line(rest)
  local from = vim.startswith(rest, '\n') and 2 or 1
  local stop = rest:find('\n', from, true)
  return stop and rest:sub(1, stop - 1) or rest
end

--- Drafts that differ in what is left to type, in server order.
---@param drafts kvsplice.Draft[]
---@param line string
---@param cursor [integer, integer]
---@return kvsplice.Draft[]
function M.distinct(drafts, line, cursor)
  local seen, kept = {}, {}
  for _, d in ipairs(drafts) do
    local rest = M.remaining(d, line, cursor)
    if rest and not seen[rest] then
      seen[rest] = true
      kept[#kept + 1] = d
    end
  end
  return kept
end

return M
