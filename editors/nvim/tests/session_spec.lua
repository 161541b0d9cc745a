-- A user's session against the server $KVSPLICE_TEST_CMD (JSON list) started with
-- $KVSPLICE_TEST_INIT (JSON object): drafts appear as ghost text while typing and the keys do
-- what they say. The assertions hold for any drafts, so the same spec runs against the real
-- `kvsplice serve` (random tiny model) and the scripted server.
return function(T)
  local kvsplice = require('kvsplice')
  local draft = require('kvsplice.draft')
  local api = vim.api
  local START_MS = tonumber(os.getenv('KVSPLICE_TEST_START_MS') or '60000')

  kvsplice.setup({
    cmd = vim.json.decode(assert(os.getenv('KVSPLICE_TEST_CMD'))),
    init_options = vim.json.decode(os.getenv('KVSPLICE_TEST_INIT') or '{}'),
    debounce_ms = 20,
  })

  local bufnr
  local function line()
    return api.nvim_get_current_line()
  end

  --- Whether the buffer holds `text` from (1-based) `row` on. Compared as displayed, since ghost
  --- text shows a control character the way the buffer does (a random model writes some).
  local function holds(row, text)
    local lines = vim.split(text, '\n', { plain = true })
    local have = api.nvim_buf_get_lines(bufnr, row - 1, row - 1 + #lines, false)
    return vim.deep_equal(vim.tbl_map(vim.fn.strtrans, have), vim.tbl_map(vim.fn.strtrans, lines))
  end

  --- Types on a fresh line until a draft shows (a random model may first offer an empty one).
  local function type_until_draft()
    T.keys('Go')
    for _, text in ipairs({ 'result = ', 'total', ' + ', 'value' }) do
      T.keys(text)
      local ok, ghost = pcall(T.wait, 'ghost text', function() return T.ghost(bufnr) end, 5000)
      if ok then
        return ghost
      end
    end
    error('no draft appeared after typing; line: ' .. line())
  end

  return {
    { 'server_starts_for_a_python_buffer', function()
      bufnr = T.open('python', {
        'def mean(values):',
        '    total = sum(values)',
        '    return total / len(values)',
        '',
      })
      local client = T.wait('kvsplice to attach', function() return kvsplice.client(bufnr) end)
      T.wait('the server to initialize', function() return client.initialized end, START_MS)
      -- The model loads after initialization; drafts wait for it.
      T.wait('the model to load', function()
        local answer = client:request_sync('kvsplice/stats', { uri = vim.uri_from_bufnr(bufnr) }, 1000, bufnr)
        return answer and answer.result and answer.result.ready
      end, START_MS)
    end },

    { 'draft_shows_as_ghost_text_and_tab_accepts_it', function()
      local ghost = type_until_draft()
      local before = line()
      local row = api.nvim_win_get_cursor(0)[1]
      T.keys('<Tab>')
      T.wait('the draft in the buffer', function() return holds(row, before .. ghost) end)
      local lines = vim.split(before .. ghost, '\n', { plain = true })
      T.eq(row + #lines - 1, api.nvim_win_get_cursor(0)[1], 'cursor row after the accepted text')
      T.eq(#api.nvim_get_current_line(), api.nvim_win_get_cursor(0)[2], 'cursor column after the accepted text')
      T.keys('<Esc>')
    end },

    { 'accept_line_takes_the_first_line_of_the_draft', function()
      local ghost = type_until_draft()
      local before = line()
      local row = api.nvim_win_get_cursor(0)[1]
      T.keys('<M-l>')
      T.wait('the first line in the buffer', function() return holds(row, before .. draft.first_line(ghost)) end)
      T.keys('<Esc>')
    end },

    { 'dismiss_hides_the_draft_and_leaves_the_buffer', function()
      type_until_draft()
      local before = api.nvim_buf_get_lines(bufnr, 0, -1, false)
      T.keys('<C-]>')
      T.wait('the ghost text to go', function() return not T.ghost(bufnr) end)
      T.sleep(150)
      T.eq(nil, T.ghost(bufnr), 'ghost text after dismiss, with no typing')
      T.eq(before, api.nvim_buf_get_lines(bufnr, 0, -1, false), 'buffer after dismiss')
      T.keys('<Esc>')
      T.eq(nil, T.ghost(bufnr), 'ghost text in normal mode')
    end },

    { 'stats_command_shows_the_buffer_figures', function()
      local text = T.stats_message()
      for _, label in ipairs({ 'model', 'device', 'tokens cached', 'reused', 'encoded', 'rotated', 'stale', 'last draft ms' }) do
        T.truthy(text:find(label, 1, true), label .. ' in\n' .. text)
      end
      T.truthy(text:match('tokens cached%s+[1-9]%d*'), 'a non-zero token count in\n' .. text)
    end },

    { 'checkhealth_reports_command_version_and_model', function()
      vim.cmd('checkhealth kvsplice')
      local report = table.concat(api.nvim_buf_get_lines(0, 0, -1, false), '\n')
      vim.cmd('bwipeout')
      T.truthy(report:find('OK server command: ', 1, true), 'server command in\n' .. report)
      T.truthy(report:find('OK server version: ', 1, true), 'server version in\n' .. report)
      T.truthy(report:find('OK model: ', 1, true), 'model in\n' .. report)
    end },
  }
end
