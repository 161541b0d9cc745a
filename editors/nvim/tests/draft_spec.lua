-- kvsplice.draft, kvsplice.progress and kvsplice.config: pure logic, no server.
return function(T)
  local draft = require('kvsplice.draft')
  local progress = require('kvsplice.progress')
  local config = require('kvsplice.config')

  local function at(line, character)
    return { line = line, character = character }
  end

  return {
    { 'item_without_range_sits_at_the_cursor', function()
      local d = draft.from_item({ insertText = 'foo()' }, 'x = ', { 3, 4 }, 'utf-16')
      T.eq({ row = 3, col = 4, tail = 0, text = 'foo()' }, d)
      T.eq('foo()', draft.remaining(d, 'x = ', { 3, 4 }))
    end },

    { 'range_from_line_start_skips_what_is_typed', function()
      local item = { insertText = 'x = foo()', range = { start = at(0, 0), ['end'] = at(0, 4) } }
      local d = draft.from_item(item, 'x = ', { 0, 4 }, 'utf-16')
      T.eq('foo()', draft.remaining(d, 'x = ', { 0, 4 }))
    end },

    { 'utf16_range_converts_to_bytes', function()
      -- 'é' is 2 bytes and 1 UTF-16 unit: the cursor after 's = "é' is byte 7, character 6.
      local line = 's = "é'
      local item = { insertText = 's = "é!"', range = { start = at(0, 0), ['end'] = at(0, 6) } }
      local d = T.truthy(draft.from_item(item, line, { 0, 7 }, 'utf-16'), 'draft')
      T.eq(7, #line)
      T.eq('!"', draft.remaining(d, line, { 0, 7 }))
    end },

    { 'range_past_the_cursor_is_replaced_on_accept', function()
      -- An auto-closed ')' after the cursor that the draft also writes.
      local item = { insertText = 'a, b)', range = { start = at(0, 2), ['end'] = at(0, 3) } }
      local d = draft.from_item(item, 'f()', { 0, 2 }, 'utf-8')
      T.eq(1, d.tail)
    end },

    { 'unusable_items_are_not_drafts', function()
      local cursor = { 2, 3 }
      T.eq(nil, draft.from_item({ insertText = { kind = 'snippet', value = '$1' } }, 'abc', cursor, 'utf-8'), 'snippet')
      T.eq(nil, draft.from_item({ insertText = 'x', range = { start = at(1, 0), ['end'] = at(2, 3) } }, 'abc', cursor, 'utf-8'), 'other line')
      T.eq(nil, draft.from_item({ insertText = 'x', range = { start = at(2, 3), ['end'] = at(2, 2) } }, 'abc', cursor, 'utf-8'), 'ends before cursor')
    end },

    { 'typing_the_draft_keeps_the_rest_and_diverging_drops_it', function()
      local d = { row = 0, col = 4, tail = 0, text = 'foo(1)' }
      T.eq('o(1)', draft.remaining(d, 'x = fo', { 0, 6 }), 'typed a prefix')
      T.eq(nil, draft.remaining(d, 'x = fa', { 0, 6 }), 'typed something else')
      T.eq(nil, draft.remaining(d, 'x = foo(1)', { 0, 10 }), 'typed all of it')
      T.eq(nil, draft.remaining(d, 'x = ', { 1, 4 }), 'other line')
      T.eq(nil, draft.remaining(d, 'x = ', { 0, 2 }), 'cursor before the draft')
    end },

    { 'accept_line_walks_a_draft_one_line_at_a_time', function()
      T.eq('foo()', draft.first_line('foo()\nbar()\n'))
      T.eq('\nbar()', draft.first_line('\nbar()\n'))
      T.eq('tail', draft.first_line('tail'))
    end },

    { 'identical_drafts_are_shown_once', function()
      local a = { row = 0, col = 0, tail = 0, text = 'x = 1' }
      local b = { row = 0, col = 2, tail = 0, text = '= 1' }
      local c = { row = 0, col = 0, tail = 0, text = 'x = 2' }
      T.eq({ a, c }, draft.distinct({ a, b, c }, 'x ', { 0, 2 }))
    end },

    { 'progress_tracks_a_model_load_and_an_encode', function()
      progress.clear()
      local load = progress.update('m', { kind = 'begin', title = 'kvsplice: loading smollm2-135m', message = 'on cpu' })
      T.eq({ kind = 'loading', subject = 'smollm2-135m', message = 'on cpu' }, load)
      progress.update('m', { kind = 'report', message = '3 s' })
      T.eq('loading smollm2-135m: 3 s', progress.describe(progress.current('a.py')))
      T.eq('loading smollm2-135m 3 s', progress.short(progress.current('a.py'), 'a.py'))
      T.truthy(progress.update('m', { kind = 'end', message = vim.NIL }), 'end of a known task')
      T.eq(nil, progress.current('a.py'), 'nothing after the end')
      progress.update(7, { kind = 'begin', title = 'kvsplice: encoding a.py', percentage = 0 })
      progress.update(7, { kind = 'report', message = '1200/4800 tokens', percentage = 25 })
      T.eq('encoding a.py: 1200/4800 tokens (25%)', progress.describe(progress.current('a.py')))
      T.eq('encoding 25%', progress.short(progress.current('a.py'), 'a.py'))
      T.eq('encoding a.py 25%', progress.short(progress.current('b.py'), 'b.py'), 'another file')
      progress.clear()
    end },

    { 'progress_puts_the_load_first_and_ignores_what_is_not_kvsplice', function()
      progress.clear()
      T.eq(nil, progress.update('x', { kind = 'begin', title = 'indexing' }), 'another title')
      T.eq(nil, progress.update('y', { kind = 'report', percentage = 5 }), 'a token never begun')
      progress.update('b', { kind = 'begin', title = 'kvsplice: encoding b.py' })
      progress.update('a', { kind = 'begin', title = 'kvsplice: encoding a.py' })
      T.eq('a.py', progress.current('a.py').subject)
      T.eq('b.py', progress.current('b.py').subject)
      progress.update('m', { kind = 'begin', title = 'kvsplice: loading qwen2.5-coder-0.5b' })
      T.eq('loading', progress.current('a.py').kind)
      progress.clear()
      T.eq(nil, progress.current('a.py'))
    end },

    { 'a_stats_error_during_the_load_is_not_a_failure', function()
      progress.clear()
      local loading = { ready = false, error = "model 'smollm2-135m' is loading" }
      T.eq(loading, progress.settled(loading), 'before any progress')
      progress.update('m', { kind = 'begin', title = 'kvsplice: loading smollm2-135m' })
      T.eq({ ready = false }, progress.settled(loading), 'while the load runs')
      T.eq("model 'smollm2-135m' is loading", loading.error, 'the answer itself is left alone')
      progress.update('m', { kind = 'end' })
      T.eq(loading, progress.settled(loading), 'after the load')
    end },

    { 'every_module_compiles', function()
      -- kvsplice.native only runs on neovim 0.12, which these tests do not have: at least parse it.
      local files = vim.api.nvim_get_runtime_file('lua/kvsplice/*.lua', true)
      T.truthy(#files >= 6, 'modules found: ' .. #files)
      for _, file in ipairs(files) do
        local chunk, err = loadfile(file)
        T.truthy(chunk, err)
      end
    end },

    { 'config_defaults_need_no_options', function()
      local opts = config.resolve()
      T.eq({ 'kvsplice', 'serve' }, opts.cmd)
      T.eq('{}', vim.json.encode(opts.init_options), 'init_options encode as an object')
      T.truthy(vim.tbl_contains(opts.filetypes, 'python'), 'python is a default filetype')
    end },

    { 'config_lists_replace_and_tables_merge', function()
      local opts = config.resolve({ filetypes = { 'go' }, keymaps = { accept = '<C-y>', next = false } })
      T.eq({ 'go' }, opts.filetypes)
      T.eq('<C-y>', opts.keymaps.accept)
      T.eq(false, opts.keymaps.next)
      T.eq('<M-l>', opts.keymaps.accept_line)
      T.truthy(not pcall(config.resolve, { cmd = 'kvsplice serve' }), 'a string cmd is rejected')
    end },
  }
end
