-- A user's first draft in a large real file ($KVSPLICE_TEST_FILE) with the default setup and the
-- packaged model ($KVSPLICE_TEST_CMD, $KVSPLICE_TEST_INIT). The model loads and the whole file is
-- encoded before the first draft, minutes on a CPU for a file this size: the plugin must say so
-- while it happens (statusline component and messages), and the draft must come after it.
return function(T)
  local kvsplice = require('kvsplice')
  local api = vim.api
  local FILE = assert(os.getenv('KVSPLICE_TEST_FILE'), 'KVSPLICE_TEST_FILE is not set')
  local WAIT_MS = tonumber(os.getenv('KVSPLICE_TEST_WAIT_MS') or '900000')

  kvsplice.setup({
    cmd = vim.json.decode(assert(os.getenv('KVSPLICE_TEST_CMD'))),
    init_options = vim.json.decode(os.getenv('KVSPLICE_TEST_INIT') or '{}'),
  })

  local bufnr
  local statuses = {} -- each new kvsplice.status() seen, in order
  local echoes = {} -- what the plugin echoed

  --- Waits for cond() while recording what the user could see meanwhile.
  local function wait_watching(what, cond)
    return T.wait(what, function()
      local status = kvsplice.status(bufnr)
      if status ~= '' and status ~= statuses[#statuses] then
        statuses[#statuses + 1] = status
      end
      return cond()
    end, WAIT_MS)
  end

  local function seen(pattern, list)
    for _, text in ipairs(list) do
      if text:match(pattern) then
        return text
      end
    end
  end

  return {
    { 'opening_a_large_file_shows_the_model_loading', function()
      vim.list_extend(echoes, T.echoes(function()
        vim.cmd.edit(FILE)
        bufnr = api.nvim_get_current_buf()
        wait_watching('the model load in the statusline', function()
          return seen('^kvsplice: loading ', statuses)
        end)
      end))
    end },

    { 'a_function_header_gets_a_draft', function()
      local ghost
      vim.list_extend(echoes, T.echoes(function()
        T.keys('Go<CR>def add_numbers(a, b):<CR>')
        ghost = wait_watching('ghost text', function() return T.ghost(bufnr) end)
      end))
      T.keys('<Esc>')
      T.truthy(ghost:match('%S'), 'a draft with text: ' .. vim.inspect(ghost))
    end },

    -- Reads what was recorded while waiting for the draft.
    { 'the_first_encode_showed_in_the_statusline_and_messages', function()
      local report = 'statusline: ' .. vim.inspect(statuses) .. '\nmessages: ' .. vim.inspect(echoes)
      T.truthy(seen('^kvsplice: encoding %d+%%$', statuses), 'the encode in the statusline; ' .. report)
      local name = vim.pesc(vim.fs.basename(FILE))
      T.truthy(seen('^kvsplice: encoding ' .. name .. ': %d+/%d+ tokens', echoes), 'the encode in a message; ' .. report)
    end },

    { 'nothing_shows_as_in_progress_once_the_draft_is_there', function()
      -- The server's progress end may trail the draft by a moment, not more.
      local ok = pcall(T.wait, 'an empty statusline', function() return kvsplice.status(bufnr) == '' end, 10000)
      T.truthy(ok, 'statusline after the draft: ' .. kvsplice.status(bufnr) .. '; seen: ' .. vim.inspect(statuses))
    end },
  }
end
