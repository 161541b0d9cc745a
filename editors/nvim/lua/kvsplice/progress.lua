--- The server's $/progress as kvsplice shows it: the model load and each document's first encode,
--- tracked from the notifications as they arrive. A kvsplice/stats answer can wait behind an
--- encode on the server's one model thread, so it cannot be what tells the user one is running.
local M = {}

-- The titles the server gives its progress (server/lsp.py).
local TITLES = {
  { kind = 'loading', pattern = '^kvsplice: loading (.+)$' },
  { kind = 'encoding', pattern = '^kvsplice: encoding (.+)$' },
}

---@class kvsplice.Task
---@field kind 'loading'|'encoding'
---@field subject string the model being loaded, or the file name being encoded
---@field message string|nil "4 s" while loading, "1200/4900 tokens" while encoding
---@field percentage number|nil

---@type table<string, kvsplice.Task>
local tasks = {}

local function field(value)
  return value ~= vim.NIL and value or nil
end

--- Applies one $/progress value.
---@param token integer|string
---@param value table a WorkDoneProgressBegin, Report or End
---@return kvsplice.Task|nil task the task it began, updated or ended; nil when not kvsplice's
function M.update(token, value)
  local key = tostring(token)
  if value.kind == 'begin' then
    for _, title in ipairs(TITLES) do
      local subject = type(value.title) == 'string' and value.title:match(title.pattern)
      if subject then
        tasks[key] = {
          kind = title.kind, subject = subject, message = field(value.message), percentage = field(value.percentage),
        }
        return tasks[key]
      end
    end
    return nil
  end
  local task = tasks[key]
  if task and value.kind == 'end' then
    tasks[key] = nil
  elseif task then
    task.message = field(value.message) or task.message
    task.percentage = field(value.percentage) or task.percentage
  end
  return task
end

--- What drafts for `file_name` wait for: the model load first (nothing else runs), then the
--- file's encode, then any other encode (the server encodes one file at a time).
---@param file_name string|nil
---@return kvsplice.Task|nil
function M.current(file_name)
  local own, any
  for _, task in pairs(tasks) do
    if task.kind == 'loading' then
      return task
    end
    if task.subject == file_name then
      own = task
    end
    any = any or task
  end
  return own or any
end

--- The server reports a model that is still loading as an `error` in its kvsplice/stats answer
--- ("model 'x' is loading"); while the load's progress runs, that is not a failure.
---@param stats table a kvsplice/stats answer, or one document's figures from it
---@return table
function M.settled(stats)
  local task = M.current()
  if stats.error and task and task.kind == 'loading' then
    stats = vim.deepcopy(stats)
    stats.error = nil
  end
  return stats
end

function M.clear()
  tasks = {}
end

--- A task in full: "encoding strutils.py: 1200/4900 tokens (24%)".
---@param task kvsplice.Task
---@return string
function M.describe(task)
  local text = ('%s %s'):format(task.kind, task.subject)
  if task.message then
    text = text .. ': ' .. task.message
  end
  if task.percentage then
    text = text .. (' (%d%%)'):format(task.percentage)
  end
  return text
end

--- A task in short, for a statusline: "loading smollm2-135m 4 s", "encoding 24%" for
--- `file_name`'s own encode, "encoding other.py 24%" for another file's.
---@param task kvsplice.Task
---@param file_name string|nil
---@return string
function M.short(task, file_name)
  local parts = { task.kind }
  if task.kind == 'loading' or task.subject ~= file_name then
    parts[#parts + 1] = task.subject
  end
  if task.percentage and task.kind == 'encoding' then
    parts[#parts + 1] = ('%d%%'):format(task.percentage)
  elseif task.message then
    parts[#parts + 1] = task.message
  end
  return table.concat(parts, ' ')
end

return M
