-- Client behaviour that needs known drafts, against scripted_server.py ($KVSPLICE_TEST_CMD):
-- cycling, line-by-line accepting, cancelling superseded requests, reconfiguring, toggling,
-- showing a first encode's progress.
return function(T)
  local kvsplice = require('kvsplice')
  local api = vim.api

  local cmd = vim.json.decode(assert(os.getenv('KVSPLICE_TEST_CMD')))
  local DRAFTS = {
    x = { ' = compute(1, 2)', ' = other()\nprint(x)' },
  }
  local function setup(init_options)
    kvsplice.setup({
      cmd = cmd,
      init_options = vim.tbl_extend('force', { model = 'scripted-a', drafts = DRAFTS, delay_ms = 0, encode_ms = 0 },
        init_options or {}),
      debounce_ms = 20,
    })
  end
  setup()

  local bufnr
  local function ghost()
    return T.ghost(bufnr)
  end
  local function index_hint()
    local ns = api.nvim_get_namespaces().kvsplice
    local mark = api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })[1]
    local chunks = mark and (mark[4].virt_lines and mark[4].virt_lines[#mark[4].virt_lines] or mark[4].virt_text) or {}
    return chunks[#chunks] and chunks[#chunks][2] == 'KvspliceGhostIndex' and chunks[#chunks][1] or nil
  end
  local function request(method)
    return kvsplice.client(bufnr):request_sync(method, {}, 2000, bufnr).result
  end
  --- A fresh empty line below the last, in insert mode.
  local function new_line()
    T.keys('<Esc>Go')
    T.wait('an empty line', function() return api.nvim_get_current_line() == '' end)
  end

  return {
    { 'server_starts_with_the_plugin_options', function()
      bufnr = T.open('python', { 'import math', '' })
      local client = T.wait('the client', function() return kvsplice.client(bufnr) end)
      T.wait('initialized', function() return client.initialized end)
      T.eq('kvsplice-scripted', client.server_info.name)
    end },

    { 'typing_shows_the_first_draft_with_its_index', function()
      new_line()
      T.keys('x')
      T.eq(' = compute(1, 2)', T.wait('ghost text', ghost))
      T.eq(' (1/2)', index_hint())
    end },

    { 'typing_a_prefix_of_the_draft_keeps_the_rest', function()
      T.keys(' = c')
      T.wait('the rest of the draft', function() return ghost() == 'ompute(1, 2)' end)
    end },

    { 'next_and_prev_cycle_the_drafts', function()
      new_line()
      T.keys('x')
      T.wait('the first draft', function() return ghost() == ' = compute(1, 2)' end)
      T.keys('<M-]>')
      T.wait('the second draft', function() return ghost() == ' = other()\nprint(x)' end)
      T.eq(' (2/2)', index_hint())
      T.keys('<M-]>')
      T.wait('wrapping to the first', function() return ghost() == ' = compute(1, 2)' end)
      T.keys('<M-[>')
      T.wait('back to the second', function() return ghost() == ' = other()\nprint(x)' end)
    end },

    { 'accept_line_walks_a_two_line_draft', function()
      -- Continues from the second draft shown by the previous case.
      local row = api.nvim_win_get_cursor(0)[1]
      T.keys('<M-l>')
      T.wait('the first line', function() return api.nvim_get_current_line() == 'x = other()' end)
      T.wait('the rest still shown', function() return ghost() == '\nprint(x)' end)
      T.keys('<M-l>')
      T.wait('the second line', function()
        return vim.deep_equal(api.nvim_buf_get_lines(bufnr, row - 1, row + 1, false), { 'x = other()', 'print(x)' })
      end)
      T.eq({ row + 1, 8 }, api.nvim_win_get_cursor(0), 'cursor at the end of the draft')
      T.eq(nil, ghost(), 'ghost text once the draft is used up')
    end },

    { 'tab_without_a_draft_is_a_tab', function()
      new_line()
      T.keys('zz<Tab>')
      -- Whatever <Tab> inserts here (python's ftplugin expands it to spaces).
      T.wait('a literal tab', function() return api.nvim_get_current_line():match('^zz%s+$') end)
    end },

    { 'leaving_insert_mode_hides_the_draft', function()
      new_line()
      T.keys('x')
      T.wait('ghost text', ghost)
      T.keys('<Esc>')
      T.wait('no ghost text', function() return not ghost() end)
    end },

    { 'typing_cancels_the_request_in_flight', function()
      setup({ delay_ms = 400 })
      T.wait('the new delay', function() return kvsplice.client(bufnr).settings.kvsplice.delay_ms == 400 end)
      local before = request('scripted/log')
      new_line()
      T.keys('x')
      T.sleep(100) -- past the debounce: the request is in flight on the server
      T.keys(' ')
      T.wait('the server to see a cancel', function() return request('scripted/log').cancelled > before.cancelled end, 3000)
      setup()
    end },

    { 'setup_again_reconfigures_the_running_server', function()
      local id = kvsplice.client(bufnr).id
      setup({ model = 'scripted-b' })
      T.wait('the new model', function() return request('kvsplice/stats').model == 'scripted-b' end)
      T.eq(id, kvsplice.client(bufnr).id, 'same client, no restart')
    end },

    { 'toggle_turns_drafts_off_and_on', function()
      T.notifications(function() vim.cmd('KvspliceToggle') end)
      new_line()
      T.keys('x')
      T.sleep(200)
      T.eq(nil, ghost(), 'ghost text while off')
      T.keys('<Tab>')
      T.wait('a literal tab while off', function() return api.nvim_get_current_line():match('^x%s+$') end)
      T.notifications(function() vim.cmd('KvspliceToggle') end)
      new_line()
      T.keys('x')
      T.wait('ghost text once on again', ghost)
    end },

    { 'stats_are_formatted_as_aligned_rows', function()
      local lines = vim.split(T.stats_message(), '\n')
      T.eq('model                scripted-b', lines[1])
      T.eq('cache                ready', lines[4])
      T.eq('tokens cached        120', lines[5])
      T.eq('last draft ms        20.5', lines[11])
    end },

    { 'a_first_encode_shows_as_it_progresses_and_drafts_follow', function()
      setup({ encode_ms = 1200 })
      T.wait('the new setting', function() return kvsplice.client(bufnr).settings.kvsplice.encode_ms == 1200 end)
      T.keys('<Esc>')
      local big, stats
      local echoes = T.echoes(function()
        big = T.open('python', { 'import os', '' })
        T.wait('the encode in the statusline', function() return kvsplice.status(big):match('^kvsplice: encoding %d+%%$') end)
        stats = T.stats_message()
        T.keys('Gox')
        T.wait('a draft once encoded', function() return T.ghost(big) end)
      end)
      T.eq('', kvsplice.status(big), 'statusline once encoded')
      T.truthy(stats:match('cache%s+encoding %d+/%d+ tokens'), 'stats while encoding:\n' .. stats)
      T.truthy(echoes[1]:match('^kvsplice: encoding case: 0/%d+ tokens %(0%%%)$'), vim.inspect(echoes))
      T.eq('kvsplice: case ready', echoes[#echoes], vim.inspect(echoes))
      setup()
    end },

    { 'a_missing_server_is_reported_with_the_fix', function()
      T.keys('<Esc>')
      local seen = T.notifications(function()
        kvsplice.setup({ cmd = { 'kvsplice-not-installed', 'serve' } })
        T.open('python', { '' })
      end)
      T.eq(1, #seen, 'notifications')
      T.eq(vim.log.levels.ERROR, seen[1].level)
      T.truthy(seen[1].msg:find('"kvsplice-not-installed" was not found on $PATH', 1, true), seen[1].msg)
      T.truthy(seen[1].msg:find('run "pip install ." in a clone of the kvsplice repository', 1, true), seen[1].msg)
    end },

    { 'a_missing_server_path_is_reported_as_a_path', function()
      local seen = T.notifications(function()
        kvsplice.setup({ cmd = { '/nonexistent/bin/kvsplice', 'serve' } })
        T.open('python', { '' })
      end)
      T.eq(1, #seen, 'notifications')
      T.truthy(seen[1].msg:find('"/nonexistent/bin/kvsplice" does not exist or is not executable', 1, true), seen[1].msg)
      T.truthy(not seen[1].msg:find('PATH', 1, true), seen[1].msg)
    end },
  }
end
