// Caravan web UI: actions through the public API, drag and drop, zoom and
// pan, and live updates from the project's event stream. No build step.
(() => {
  'use strict';
  const $ = (s, r = document) => r.querySelector(s);
  const $$ = (s, r = document) => Array.from(r.querySelectorAll(s));
  const csrf = $('meta[name=csrf-token]')?.content || '';
  const project = document.body.dataset.project || '';
  const enc = encodeURIComponent;

  // ---- toasts and dialogs -------------------------------------------
  function toast(msg, kind = '', link) {
    const t = document.createElement('div');
    t.className = 'toast ' + kind;
    t.textContent = msg;
    if (link) {
      const a = document.createElement('a');
      a.href = link.href; a.textContent = link.text;
      t.append(' ', a);
    }
    $('#toasts').append(t);
    setTimeout(() => t.remove(), kind === 'bad' ? 12000 : 6000);
  }

  const dialog = $('#dialog');
  let lastFocus = null;
  function openDialog(html) {
    lastFocus = document.activeElement;
    $('#dialog-body').innerHTML = html;
    if (!dialog.open) dialog.showModal();
    const first = $('[autofocus], button.choice, .dialog-actions .primary, button', dialog);
    if (first) first.focus();
  }
  function closeDialog() {
    if (dialog.open) dialog.close();
  }
  dialog?.addEventListener('close', () => { if (lastFocus && document.contains(lastFocus)) lastFocus.focus(); });
  dialog?.addEventListener('click', (e) => {
    if (e.target === dialog || e.target.closest('[data-close]')) closeDialog();
  });

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }

  // confirm asks in the dialog; resolves true on OK.
  function confirmAction(title, text, ok, danger) {
    return new Promise((resolve) => {
      openDialog(`<h2 id="dialog-title">${esc(title)}</h2><p>${esc(text)}</p>
        <div class="dialog-actions"><button type="button" class="btn" data-answer="no">Cancel</button>
        <button type="button" class="btn ${danger ? 'danger' : 'primary'}" data-answer="yes" autofocus>${esc(ok)}</button></div>`);
      $('[data-answer=yes]', dialog).focus();
      const done = (v) => { dialog.removeEventListener('click', onClick); dialog.removeEventListener('close', onClose); resolve(v); };
      const onClick = (e) => {
        const b = e.target.closest('[data-answer]');
        if (!b) return;
        const yes = b.dataset.answer === 'yes';
        closeDialog();
        done(yes);
      };
      const onClose = () => done(false);
      dialog.addEventListener('click', onClick);
      // A dialog closed just before (the menu this confirms) fires its
      // close event later, as a task: listen only after it.
      setTimeout(() => dialog.addEventListener('close', onClose, { once: true }), 0);
    });
  }

  // ---- the API --------------------------------------------------------
  async function api(method, path, body) {
    const opts = { method, headers: { 'X-CSRF-Token': csrf, Accept: 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data = null;
    try { data = await r.json(); } catch { /* empty body */ }
    if (r.status === 401) {
      location.href = '/login?expired=1&next=' + enc(location.pathname + location.search);
      throw new Error('signed out');
    }
    if (!r.ok) throw new Error((data && data.message) || r.status + ' ' + r.statusText);
    return data;
  }
  const P = (...parts) => '/v1/projects/' + enc(project) + parts.map((p) => '/' + enc(p)).join('');

  async function run(btn, what, fn) {
    if (btn) btn.disabled = true;
    try {
      const res = await fn();
      return res;
    } catch (e) {
      if (e.message !== 'signed out') toast(what + ' failed: ' + e.message, 'bad');
      return null;
    } finally {
      if (btn && document.contains(btn)) btn.disabled = false;
    }
  }

  async function promote(stage, freight, alias, btn) {
    const ok = await confirmAction('Promote to ' + stage + '?', `Freight ${alias} will be promoted to ${stage}.`, 'Promote');
    if (!ok) return;
    const p = await run(btn, 'Promotion', () => api('POST', P('stages', stage, 'promotions'), { freight }));
    if (p) {
      const name = p.metadata?.name;
      toast(`Promoting ${alias} to ${stage}.`, 'ok', name ? { href: `/projects/${enc(project)}/promotions/${enc(name)}`, text: 'Watch it' } : null);
      flashLive('stage:' + stage);
    }
  }

  const actions = {
    'promote-menu': async (b) => {
      const r = await fetch(`/projects/${enc(project)}/stages/${enc(b.dataset.stage)}?fragment=promote`, { credentials: 'same-origin' });
      if (r.status === 401) { location.href = '/login?expired=1'; return; }
      openDialog(await r.text());
    },
    'stage-menu': (b) => {
      const s = esc(b.dataset.stage);
      const items = [];
      if ('reverify' in b.dataset) items.push(`<button type="button" class="choice" data-action="reverify" data-stage="${s}">Re-verify the current freight</button>`);
      if ('verifying' in b.dataset) items.push(`<button type="button" class="choice" data-action="abort-verification" data-stage="${s}">Abort the verification</button>`);
      if (b.dataset.promotion) items.push(`<button type="button" class="choice" data-action="abort-promotion" data-promotion="${esc(b.dataset.promotion)}">Abort the promotion</button>`);
      if ('held' in b.dataset) items.push(`<button type="button" class="choice" data-action="resume" data-stage="${s}">Resume auto-promotion</button>`);
      items.push(`<a class="choice" href="/projects/${enc(project)}/compare?kind=stage&amp;a=${enc(b.dataset.stage)}">Compare with another stage…</a>`);
      items.push(`<a class="choice" href="/projects/${enc(project)}/stages/${enc(b.dataset.stage)}">Open the stage's page</a>`);
      openDialog(`<h2 id="dialog-title">${s}</h2><ul class="choices">${items.map((i) => '<li>' + i + '</li>').join('')}</ul>
        <div class="dialog-actions"><button type="button" class="btn" data-close>Cancel</button></div>`);
    },
    'freight-menu': (b) => {
      const card = b.closest('[data-freight]');
      const alias = card.dataset.alias;
      const stages = (card.dataset.eligible || '').split(' ').filter(Boolean);
      openDialog(`<h2 id="dialog-title">Promote ${esc(alias)} to…</h2>
        <ul class="choices">${stages.map((s) => `<li><button type="button" class="choice" data-action="promote" data-stage="${esc(s)}" data-freight="${esc(card.dataset.freight)}" data-alias="${esc(alias)}">${esc(s)}</button></li>`).join('')}</ul>
        <div class="dialog-actions"><button type="button" class="btn" data-close>Cancel</button></div>`);
    },
    promote: (b) => { closeDialog(); return promote(b.dataset.stage, b.dataset.freight, b.dataset.alias || b.dataset.freight.slice(0, 7), b); },
    reverify: async (b) => {
      closeDialog();
      if (await run(b, 'Re-verification', () => api('POST', P('stages', b.dataset.stage, 'verification')))) toast(`Verifying ${b.dataset.stage} again.`, 'ok');
    },
    'abort-verification': async (b) => {
      closeDialog();
      if (!await confirmAction('Abort verification?', `The running verification of ${b.dataset.stage} stops; the freight stays unverified there.`, 'Abort verification', true)) return;
      if (await run(b, 'Abort', () => api('DELETE', P('stages', b.dataset.stage, 'verification')))) toast('Verification abort requested.', 'ok');
    },
    'abort-promotion': async (b) => {
      closeDialog();
      if (!await confirmAction('Abort promotion?', `Promotion ${b.dataset.promotion} stops after its current step.`, 'Abort promotion', true)) return;
      if (await run(b, 'Abort', () => api('POST', P('promotions', b.dataset.promotion, 'abort')))) toast('Promotion abort requested.', 'ok');
    },
    resume: async (b) => {
      closeDialog();
      if (await run(b, 'Resume', () => api('POST', P('stages', b.dataset.stage, 'auto-promotion', 'resume')))) toast(`Auto-promotion of ${b.dataset.stage} resumed.`, 'ok');
    },
    refresh: async (b) => {
      if (await run(b, 'Refresh', () => api('POST', P('warehouses', b.dataset.warehouse, 'refresh')))) toast(`Warehouse ${b.dataset.warehouse}: discovery requested.`, 'ok');
    },
    replay: async (b) => {
      if (await run(b, 'Replay', () => api('POST', '/v1/deadletters/' + enc(b.dataset.id) + '/replay'))) {
        toast('Replayed.', 'ok');
        b.closest('tr')?.remove();
      }
    },
  };

  document.addEventListener('click', (e) => {
    const b = e.target.closest('[data-action]');
    if (!b || b.disabled) return;
    const fn = actions[b.dataset.action];
    if (!fn) return;
    e.preventDefault();
    fn(b);
  });
  document.addEventListener('submit', async (e) => {
    const f = e.target.closest('[data-action-form=approve]');
    if (!f) return;
    e.preventDefault();
    const stage = f.elements.stage.value;
    if (await run(f.querySelector('button'), 'Approval', () => api('POST', P('freight', f.dataset.freight, 'approve'), { stage }))) toast(`Approved for ${stage}.`, 'ok');
  });

  // ---- drag and drop ------------------------------------------------
  let dragged = null;
  document.addEventListener('dragstart', (e) => {
    const card = e.target.closest?.('.fcard[draggable=true]');
    if (!card) return;
    dragged = card;
    card.classList.add('dragging');
    e.dataTransfer.effectAllowed = 'move';
    e.dataTransfer.setData('text/plain', card.dataset.freight);
    const ok = new Set((card.dataset.eligible || '').split(' ').filter(Boolean));
    $$('.node.k-stage, .node.k-gate').forEach((n) => {
      const s = n.dataset.node.slice(3);
      n.classList.add(ok.has(s) ? 'drop-ok' : 'drop-no');
    });
  });
  document.addEventListener('dragend', () => {
    dragged?.classList.remove('dragging');
    dragged = null;
    $$('.drop-ok, .drop-no, .drop-over').forEach((n) => n.classList.remove('drop-ok', 'drop-no', 'drop-over'));
  });
  document.addEventListener('dragover', (e) => {
    const n = e.target.closest?.('.node.drop-ok');
    if (!n) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'move';
    $$('.drop-over').forEach((o) => o !== n && o.classList.remove('drop-over'));
    n.classList.add('drop-over');
  });
  document.addEventListener('drop', (e) => {
    const n = e.target.closest?.('.node.drop-ok');
    if (!n || !dragged) return;
    e.preventDefault();
    const d = dragged;
    promote(n.dataset.node.slice(3), d.dataset.freight, d.dataset.alias);
  });

  // ---- lazy cards ----------------------------------------------------
  // A big pipeline comes with the cards of its first view only; the others
  // are placeholders (their name and link) filled in as they come into
  // view or get focus.
  let lazyObserver = null;
  function setupLazyCards() {
    lazyObserver?.disconnect();
    const nodes = $$('.node[data-lazy]');
    if (!nodes.length || !project) return;
    const want = new Set();
    let timer = null;
    const load = async () => {
      timer = null;
      const names = [...want].slice(0, 100);
      names.forEach((n) => want.delete(n));
      if (!names.length) return;
      try {
        const r = await fetch(`/projects/${enc(project)}?fragment=cards&` + names.map((n) => 'stage=' + enc(n)).join('&'), { credentials: 'same-origin' });
        if (r.status === 401) { setLive('lost', 'Signed out'); return; }
        if (r.ok) {
          const t = document.createElement('template');
          t.innerHTML = await r.text();
          [...t.content.querySelectorAll('article.card')].forEach((c) => {
            const old = document.getElementById(c.id);
            if (!old || !old.classList.contains('lazy')) return;
            const hadFocus = old.contains(document.activeElement);
            old.replaceWith(c);
            c.closest('.node')?.removeAttribute('data-lazy');
            if (hadFocus) $('h3 a', c)?.focus();
          });
        }
      } catch { /* scrolled again, or the next sync, tries again */ }
      if (want.size) timer = setTimeout(load, 0);
    };
    const ask = (n) => {
      lazyObserver.unobserve(n);
      if (!$('.card.lazy', n)) return;
      want.add(n.dataset.node.slice(3));
      if (!timer) timer = setTimeout(load, 30);
    };
    lazyObserver = new IntersectionObserver((es) => es.forEach((e) => { if (e.isIntersecting) ask(e.target); }), { rootMargin: '50%' });
    nodes.forEach((n) => lazyObserver.observe(n));
    $('.canvas')?.addEventListener('focusin', (e) => {
      const n = e.target.closest?.('.node[data-lazy]');
      if (n) ask(n);
    });
  }

  // ---- zoom and pan -------------------------------------------------
  const narrow = window.matchMedia('(max-width: 720px)');
  function setupGraph() {
    setupLazyCards();
    const vp = $('.viewport');
    const canvas = $('.canvas', vp || document);
    if (!vp || !canvas) return;
    const key = 'caravan.view.' + project;
    let v = null;
    try { v = JSON.parse(sessionStorage.getItem(key)); } catch { v = null; }
    const apply = () => {
      if (narrow.matches) { canvas.style.transform = ''; return; }
      canvas.style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.k})`;
      sessionStorage.setItem(key, JSON.stringify(v));
    };
    const fit = (least = 0.05) => {
      vp.style.height = '';
      const w = parseFloat(canvas.style.width), h = parseFloat(canvas.style.height);
      // Fit, but never so small that cards cannot be read: a big pipeline
      // starts at its sources, to be panned or zoomed out.
      const k = Math.max(least, Math.min(1, vp.clientWidth / w, vp.clientHeight / h));
      v = { x: Math.max(0, (vp.clientWidth - w * k) / 2), y: 8, k };
      // A small pipeline needs no tall viewport.
      vp.style.height = h * k + 24 < vp.clientHeight ? Math.max(h * k + 24, 240) + 'px' : '';
      apply();
    };
    const zoom = (f, cx = vp.clientWidth / 2, cy = vp.clientHeight / 2) => {
      const k = Math.max(0.1, Math.min(2.5, v.k * f));
      v = { x: cx - (cx - v.x) * (k / v.k), y: cy - (cy - v.y) * (k / v.k), k };
      apply();
    };
    if (!v) fit(0.5); else apply();
    vp.graph = { fit, zoom, apply: () => apply() };
    $$('[data-zoom]').forEach((b) => b.addEventListener('click', () => {
      const z = b.dataset.zoom;
      if (z === 'fit') fit(); else zoom(z === 'in' ? 1.25 : 0.8);
    }));
    vp.addEventListener('wheel', (e) => {
      if (narrow.matches) return;
      e.preventDefault();
      const r = vp.getBoundingClientRect();
      if (e.ctrlKey || e.metaKey) zoom(Math.exp(-e.deltaY / 300), e.clientX - r.left, e.clientY - r.top);
      else { v.x -= e.deltaX; v.y -= e.deltaY; apply(); }
    }, { passive: false });
    let pan = null;
    vp.addEventListener('pointerdown', (e) => {
      if (narrow.matches || e.button !== 0 || e.target.closest('a, button, summary, .menu-items, .fcard')) return;
      pan = { x: e.clientX - v.x, y: e.clientY - v.y, id: e.pointerId };
      vp.setPointerCapture(e.pointerId);
      vp.classList.add('panning');
    });
    vp.addEventListener('pointermove', (e) => {
      if (!pan || e.pointerId !== pan.id) return;
      v.x = e.clientX - pan.x; v.y = e.clientY - pan.y; apply();
    });
    const end = () => { pan = null; vp.classList.remove('panning'); };
    vp.addEventListener('pointerup', end);
    vp.addEventListener('pointercancel', end);
    vp.addEventListener('keydown', (e) => {
      if (e.target !== vp) return;
      const step = 60;
      const k = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] }[e.key];
      if (k) { v.x += k[0]; v.y += k[1]; apply(); e.preventDefault(); }
      else if (e.key === '+' || e.key === '=') { zoom(1.25); e.preventDefault(); }
      else if (e.key === '-') { zoom(0.8); e.preventDefault(); }
      else if (e.key === '0') { fit(); e.preventDefault(); }
    });
    // Keep a focused card in view.
    vp.addEventListener('focusin', (e) => {
      if (narrow.matches || e.target === vp) return;
      const node = e.target.closest('.node');
      if (!node) return;
      const r = vp.getBoundingClientRect(), n = node.getBoundingClientRect();
      if (n.left < r.left) v.x += r.left - n.left + 16;
      else if (n.right > r.right) v.x -= n.right - r.right + 16;
      if (n.top < r.top) v.y += r.top - n.top + 16;
      else if (n.bottom > r.bottom) v.y -= n.bottom - r.bottom + 16;
      vp.scrollTop = 0; vp.scrollLeft = 0;
      apply();
    });
    narrow.addEventListener?.('change', apply);
    // Hovering a card lights its edges.
    vp.addEventListener('mouseover', (e) => {
      const node = e.target.closest('.node');
      $$('.edges path.hot', vp).forEach((p) => p.classList.remove('hot'));
      if (!node) return;
      const id = node.dataset.node;
      $$('.edges path[data-from]', vp).forEach((p) => {
        if (p.dataset.from === id || p.dataset.to === id) p.classList.add('hot');
      });
    });
  }

  // ---- time slider ----------------------------------------------------
  const range = $('[data-slider]');
  if (range) {
    const at = $('#at');
    const show = () => {
      const d = new Date(Number(range.value) * 60000);
      at.value = d.toISOString().slice(0, 16);
    };
    range.addEventListener('input', show);
    range.addEventListener('change', () => { show(); range.form.requestSubmit(); });
  }

  // ---- running durations ------------------------------------------------
  function fmt(s) {
    if (s < 60) return Math.floor(s) + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + Math.floor(s % 60) + 's';
    return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  }
  setInterval(() => {
    $$('time[data-since]').forEach((t) => {
      const since = Date.parse(t.dataset.since);
      if (!isNaN(since)) t.textContent = fmt(Math.max(0, (Date.now() - since) / 1000));
    });
  }, 1000);

  // ---- live updates ---------------------------------------------------
  const live = $('#live');
  function setLive(state, text) {
    if (!live) return;
    live.dataset.state = state;
    $('.live-text', live).textContent = text;
    $('.live-retry', live).hidden = state !== 'lost';
  }

  // fragmentOf fetches an element's new HTML: its data-fragment URL, or
  // this page again (the element with the same id).
  async function fragmentOf(el) {
    if (el.classList.contains('card') && !el.dataset.fragment) {
      el.dataset.fragment = `/projects/${enc(project)}?fragment=card&stage=${enc(el.dataset.stage)}${location.search.includes('at=') ? '&' + location.search.slice(1) : ''}`;
    }
    const url = el.dataset.fragment || location.pathname + location.search;
    const r = await fetch(url, { credentials: 'same-origin', headers: { 'X-Requested-With': 'caravan' } });
    if (r.status === 401) throw new Error('signed out');
    if (!r.ok) throw new Error(r.status + '');
    const html = await r.text();
    const t = document.createElement('template');
    t.innerHTML = html;
    if (el.dataset.fragment) return t.content.firstElementChild;
    const doc = new DOMParser().parseFromString(html, 'text/html');
    return doc.getElementById(el.id);
  }

  const pending = new Map();
  function refresh(el, flash = true) {
    if (!el.id || pending.has(el.id)) return;
    pending.set(el.id, setTimeout(async () => {
      const id = el.id;
      try {
        const cur = document.getElementById(id);
        if (!cur) return;
        const next = await fragmentOf(cur);
        if (!next) return;
        const hadFocus = cur.contains(document.activeElement) ? document.activeElement : null;
        const focusKey = hadFocus && (hadFocus.dataset.action || hadFocus.getAttribute('href'));
        cur.replaceWith(next);
        if (id === 'graph') setupGraph();
        if (focusKey) {
          const again = $$('[data-action], a[href]', next).find((x) => (x.dataset.action || x.getAttribute('href')) === focusKey);
          again?.focus();
        }
        if (flash && next.classList.contains('card')) {
          next.classList.add('flash');
          const node = next.closest('.node');
          if (node) node.dataset.hash = '';
        }
      } catch (e) {
        if (e.message === 'signed out') setLive('lost', 'Signed out');
      } finally {
        pending.delete(id);
      }
    }, 120));
  }

  function flashLive(token) {
    $$('[data-live]').forEach((el) => { if (el.dataset.live.split(' ').includes(token)) refresh(el); });
  }

  function tokens(ev) {
    const t = new Set();
    const p = ev.payload || {};
    const s = ev.subject || {};
    const stage = p.stage || (s.kind === 'Stage' ? s.name : '');
    if (stage) t.add('stage:' + stage);
    const promo = p.promotion || (s.kind === 'Promotion' ? s.name : '');
    if (promo) t.add('promotion:' + promo);
    if (p.freight || s.kind === 'Freight' || /^(Freight|StageVerified|Promotion(Succeeded|Failed))/.test(ev.type)) t.add('freight');
    const wh = p.warehouse || (s.kind === 'Warehouse' ? s.name : '') || (p.origin && p.origin.name);
    if (wh) t.add('warehouse:' + wh);
    if (ev.type === 'ResourceApplied' || ev.type === 'ResourceDeleted') {
      if (['Stage', 'Warehouse', 'Project', 'ProjectConfig'].includes(p.kind)) t.add('graph');
      if (p.kind === 'Stage') t.add('stage:' + p.name);
      if (p.kind === 'Warehouse') t.add('warehouse:' + p.name);
    }
    return t;
  }

  function onEvent(ev) {
    const ts = tokens(ev);
    if (ts.has('graph') && $('#graph')) { refresh($('#graph')); return; }
    $$('[data-live]').forEach((el) => {
      if (el.dataset.live.split(' ').some((x) => ts.has(x))) refresh(el);
    });
  }

  // sync compares the server's digest of every card with the page and
  // re-renders only the cards that changed (after a reconnect, and every
  // minute: events are the fast path, not the only one).
  let graphHash = null;
  async function sync() {
    if (!$('#graph')) {
      $$('[data-live]').forEach((el) => refresh(el, false));
      return;
    }
    try {
      const r = await fetch(`/projects/${enc(project)}?fragment=digest${location.search.includes('at=') ? '&' + location.search.slice(1) : ''}`, { credentials: 'same-origin' });
      if (!r.ok) return;
      const d = await r.json();
      if (graphHash && d.graph !== graphHash) { graphHash = d.graph; refresh($('#graph')); return; }
      graphHash = d.graph;
      $$('.node[data-hash]').forEach((n) => {
        const card = $('.card', n);
        if (card && d[card.id] && d[card.id] !== n.dataset.hash) {
          refresh(card, false);
          n.dataset.hash = d[card.id];
        }
      });
      const tl = $('#timeline');
      if (tl) refresh(tl, false);
    } catch { /* the next sync tries again */ }
  }

  // The stream: fetch with a streaming body, so that Last-Event-ID can be
  // sent on every reconnect and a lost connection can be shown.
  let lastId = sessionStorage.getItem('caravan.last.' + project) || '';
  let backoff = 1000;
  let ctrl = null;
  let retryTimer = null;
  async function connect() {
    clearTimeout(retryTimer);
    ctrl?.abort();
    ctrl = new AbortController();
    setLive('connecting', 'Connecting…');
    const headers = { Accept: 'text/event-stream' };
    if (lastId) headers['Last-Event-ID'] = lastId;
    let opened = false;
    try {
      const r = await fetch(P('events'), { headers, credentials: 'same-origin', signal: ctrl.signal, cache: 'no-store' });
      if (r.status === 401) { setLive('lost', 'Signed out'); return; }
      if (r.status === 400 && lastId) { lastId = ''; throw new Error('stale id'); }
      if (!r.ok || !r.body) throw new Error(String(r.status));
      opened = true;
      setLive('live', 'Live');
      backoff = 1000;
      sync();
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let id = '', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('id:')) id = line.slice(3).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          if (id) { lastId = id; sessionStorage.setItem('caravan.last.' + project, id); }
          if (data) { try { onEvent(JSON.parse(data)); } catch { /* not an envelope */ } }
        }
      }
      throw new Error('closed');
    } catch (e) {
      if (e.name === 'AbortError') return;
      const wait = opened ? 1000 : backoff;
      backoff = Math.min(backoff * 2, 30000);
      setLive('lost', `Live updates lost — reconnecting in ${Math.round(wait / 1000)}s`);
      retryTimer = setTimeout(connect, wait);
    }
  }

  if (project && live) {
    $('.live-retry', live).addEventListener('click', () => { backoff = 1000; connect(); });
    window.addEventListener('online', () => connect());
    window.addEventListener('pagehide', () => ctrl?.abort());
    connect();
    setInterval(sync, 60000);
  }
  setupGraph();
  // When the first frame after start-up is painted (read by the e2e
  // benchmark as "usable").
  requestAnimationFrame(() => setTimeout(() => { window.caravanReady = performance.now(); }, 0));
})();
