// AI Gateway dashboard. Plain JavaScript, no dependencies, no inline code:
// the page's Content-Security-Policy allows only this file. All URLs are
// relative, so the dashboard works under any path prefix.
'use strict';

(function () {
	const $ = (sel, root) => (root || document).querySelector(sel);
	const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
	const csrfToken = $('meta[name="csrf-token"]').getAttribute('content');

	const state = {
		session: null,   // answer of api/session
		account: '',     // account shown (admins choose it)
		view: 'keys',
		keys: [],
		days: 30,
	};

	// ---- API ---------------------------------------------------------------

	class APIError extends Error {
		constructor(status, body) {
			const e = (body && body.error) || {};
			super(e.message || ('The server answered ' + status + '.'));
			this.status = status;
			this.code = e.code || '';
		}
	}

	function withAccount(path) {
		// before the first answer the page does not know whether the user is
		// an admin: it sends the account from the address, and drops it if
		// the server says only admins may choose
		if (!state.account || (state.session && !state.session.admin)) return path;
		return path + (path.includes('?') ? '&' : '?') + 'account=' + encodeURIComponent(state.account);
	}

	async function api(method, path, body) {
		const opts = {
			method: method,
			headers: { 'Accept': 'application/json' },
			credentials: 'same-origin',
			cache: 'no-store',
		};
		if (method !== 'GET') {
			opts.headers['X-CSRF-Token'] = csrfToken;
			opts.headers['Content-Type'] = 'application/json';
			opts.body = JSON.stringify(body || {});
		}
		let resp;
		try {
			resp = await fetch('api/' + withAccount(path), opts);
		} catch (err) {
			throw new APIError(0, { error: { message: 'The dashboard cannot reach the server. Check your connection and try again.' } });
		}
		let data = null;
		try { data = await resp.json(); } catch (err) { /* not JSON */ }
		if (!resp.ok) {
			const e = new APIError(resp.status, data);
			if (e.code === 'csrf_token' || e.code === 'csrf_origin') {
				showBanner('error', 'Your session on this page has expired (the server may have restarted). Reload the page and try again.');
			}
			throw e;
		}
		return data;
	}

	// ---- formatting -------------------------------------------------------

	const dateFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
	const dateTimeFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
	const numFmt = new Intl.NumberFormat();

	function fmtDate(s) { return s ? dateFmt.format(new Date(s)) : ''; }
	function fmtDateTime(s) { return s ? dateTimeFmt.format(new Date(s)) : ''; }

	function fmtAgo(s) {
		if (!s) return 'Never';
		const secs = (Date.now() - new Date(s).getTime()) / 1000;
		if (secs < 60) return 'Just now';
		if (secs < 3600) return Math.floor(secs / 60) + ' min ago';
		if (secs < 86400) return Math.floor(secs / 3600) + ' h ago';
		if (secs < 86400 * 7) return Math.floor(secs / 86400) + ' d ago';
		return fmtDate(s);
	}

	// money shows a decimal string from the server with at least two
	// decimals, as it is (no float rounding).
	function money(s, withCurrency) {
		let v = String(s == null ? '0' : s);
		const neg = v.startsWith('-');
		if (neg) v = v.slice(1);
		let [i, f] = v.split('.');
		f = (f || '').padEnd(2, '0');
		i = i.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
		const out = (neg ? '−' : '') + i + '.' + f;
		return withCurrency === false ? out : out + ' ' + currency();
	}

	function currency() { return (state.session && state.session.currency) || ''; }

	function el(tag, attrs, ...children) {
		const e = document.createElement(tag);
		for (const [k, v] of Object.entries(attrs || {})) {
			if (v == null || v === false) continue;
			if (k === 'class') e.className = v;
			else if (k === 'text') e.textContent = v;
			else e.setAttribute(k, v === true ? '' : v);
		}
		for (const c of children) {
			if (c == null) continue;
			e.append(c instanceof Node ? c : document.createTextNode(String(c)));
		}
		return e;
	}

	// ---- feedback ---------------------------------------------------------

	let toastTimer = 0;
	function toast(msg) {
		const t = $('#toast');
		t.textContent = msg;
		t.classList.add('show');
		clearTimeout(toastTimer);
		toastTimer = setTimeout(() => t.classList.remove('show'), 3500);
	}

	function showBanner(kind, msg) {
		const b = $('#banner');
		b.className = 'banner ' + kind;
		b.textContent = msg;
		b.hidden = !msg;
	}

	// ---- dialogs ----------------------------------------------------------

	const openers = new WeakMap();

	function openDialog(dlg, focusSel) {
		openers.set(dlg, document.activeElement);
		const err = $('.form-error', dlg);
		if (err) { err.hidden = true; err.textContent = ''; }
		dlg.showModal();
		const f = focusSel ? $(focusSel, dlg) : $('input, select, button', dlg);
		if (f) { f.focus(); if (f.select && f.tagName === 'INPUT') f.select(); }
	}

	function restoreFocus(dlg, fallback) {
		const o = openers.get(dlg);
		openers.delete(dlg);
		if (o && o.isConnected && !o.disabled) o.focus();
		else if (fallback && fallback.isConnected && !fallback.hidden) fallback.focus();
		else $('#main').focus();
	}

	function formError(dlg, err) {
		const p = $('.form-error', dlg);
		p.textContent = err.message;
		p.hidden = false;
	}

	// runForm wires a dialog form: submit runs action (async); on success
	// the dialog closes; on failure the error shows in the dialog.
	function runForm(dlg, action) {
		const form = $('form', dlg);
		form.addEventListener('submit', async (ev) => {
			ev.preventDefault();
			const submit = $('button[type="submit"]', form);
			submit.disabled = true;
			try {
				const after = await action();
				dlg.close();
				if (after) after();
			} catch (err) {
				formError(dlg, err);
			} finally {
				submit.disabled = false;
			}
		});
	}

	for (const dlg of $$('dialog')) {
		for (const b of $$('[data-close]', dlg)) b.addEventListener('click', () => dlg.close());
		dlg.addEventListener('close', () => {
			// forget the plaintext as soon as the dialog goes away
			if (dlg.id === 'dlg-secret') forgetSecret();
			restoreFocus(dlg, $('#create-key'));
		});
	}

	// ---- new key dialog ---------------------------------------------------

	function showSecret(key, oldKey, grace) {
		const dlg = $('#dlg-secret');
		$('#secret-value').value = key.key;
		$('#secret-name').textContent = '(' + key.name + ')';
		const usage = $('#secret-usage');
		if (state.session.gateway_url) {
			usage.textContent = 'Use it with the OpenAI SDK: base URL ' + state.session.gateway_url + ', API key as above.';
			usage.hidden = false;
		} else {
			usage.hidden = true;
		}
		const old = $('#secret-old');
		if (oldKey) {
			old.textContent = grace
				? 'The old key ' + oldKey.hint + ' keeps working until ' + fmtDateTime(oldKey.expires_at) + '.'
				: 'The old key ' + oldKey.hint + ' no longer works.';
			old.hidden = false;
		} else {
			old.hidden = true;
		}
		openDialog(dlg, '#secret-copy');
		$('#secret-value').select();
	}

	$('#secret-copy').addEventListener('click', async () => {
		const input = $('#secret-value');
		let ok = false;
		try {
			await navigator.clipboard.writeText(input.value);
			ok = true;
		} catch (err) {
			input.focus();
			input.select();
			try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
		}
		$('#secret-copy').textContent = ok ? 'Copied' : 'Copy';
		toast(ok ? 'Key copied to the clipboard.' : 'Copying failed: select the key and copy it yourself.');
		$('#secret-copy').focus();
	});
	function forgetSecret() {
		$('#secret-value').value = '';
		$('#secret-copy').textContent = 'Copy';
	}
	$('#secret-done').addEventListener('click', () => {
		forgetSecret();
		$('#dlg-secret').close();
	});
	$('#dlg-secret').addEventListener('cancel', forgetSecret);

	// ---- keys -------------------------------------------------------------

	function keyByID(id) { return state.keys.find((k) => k.id === id); }

	function keyStatus(k) {
		if (k.status === 'expired') return el('span', { class: 'badge bad', text: 'Expired' });
		if (k.replaced_by) return el('span', { class: 'badge warn', text: 'Rotated' });
		return null;
	}

	function renderKeys() {
		const body = $('#keys-body');
		body.replaceChildren();
		const has = state.keys.length > 0;
		$('#keys-empty').hidden = has;
		$('#keys-table').hidden = !has;
		for (const k of state.keys) {
			let expires = 'Never';
			if (k.expires_at) expires = (k.status === 'expired' ? 'Expired ' : '') + fmtDateTime(k.expires_at);
			const actions = el('div', { class: 'row-actions' },
				el('button', { type: 'button', class: 'ghost small', 'data-action': 'rename', 'data-key': k.id, 'aria-label': 'Rename key ' + k.name, text: 'Rename' }),
				k.replaced_by ? null : el('button', { type: 'button', class: 'ghost small', 'data-action': 'rotate', 'data-key': k.id, 'aria-label': 'Rotate key ' + k.name, text: 'Rotate' }),
				el('button', { type: 'button', class: 'ghost small danger-text', 'data-action': 'delete', 'data-key': k.id, 'aria-label': 'Delete key ' + k.name, text: 'Delete' }));
			body.append(el('tr', { 'data-key': k.id },
				el('td', { 'data-label': 'Name' }, el('span', { class: 'key-name', text: k.name }), ' ', keyStatus(k)),
				el('td', { 'data-label': 'Key' }, el('code', { text: k.hint })),
				el('td', { 'data-label': 'Created', title: k.created_at }, fmtDate(k.created_at)),
				el('td', { 'data-label': 'Last used', title: k.last_used_at || '' }, fmtAgo(k.last_used_at)),
				el('td', { 'data-label': 'Expires', title: k.expires_at || '' }, expires),
				el('td', { class: 'actions-cell' }, actions)));
		}
	}

	async function loadKeys() {
		const data = await api('GET', 'keys');
		state.keys = data.keys || [];
		renderKeys();
	}

	$('#keys-body').addEventListener('click', (ev) => {
		const b = ev.target.closest('button[data-action]');
		if (!b) return;
		const k = keyByID(b.getAttribute('data-key'));
		if (!k) return;
		const action = b.getAttribute('data-action');
		if (action === 'rename') {
			current = k;
			$('#rename-name').value = k.name;
			openDialog($('#dlg-rename'), '#rename-name');
		} else if (action === 'rotate') {
			current = k;
			$('#rotate-which').textContent = k.name + ' (' + k.hint + ')';
			$('#rotate-grace').value = '';
			openDialog($('#dlg-rotate'), '#rotate-grace');
		} else if (action === 'delete') {
			current = k;
			$('#delete-which').textContent = k.name + ' (' + k.hint + ')';
			openDialog($('#dlg-delete'), '[data-close]');
		}
	});

	let current = null; // the key a dialog is about

	function openCreate() {
		$('#create-name').value = '';
		$('#create-expiry').value = '';
		openDialog($('#dlg-create'), '#create-name');
	}
	$('#create-key').addEventListener('click', openCreate);
	$('#create-key-empty').addEventListener('click', openCreate);

	runForm($('#dlg-create'), async () => {
		const name = $('#create-name').value.trim();
		if (!name) throw new Error('Give the key a name.');
		const key = await api('POST', 'keys', { name: name, expires_in: $('#create-expiry').value });
		await loadKeys();
		return () => showSecret(key);
	});

	runForm($('#dlg-rename'), async () => {
		const name = $('#rename-name').value.trim();
		if (!name) throw new Error('Give the key a name.');
		await api('PATCH', 'keys/' + encodeURIComponent(current.id), { name: name });
		await loadKeys();
		return () => toast('Key renamed.');
	});

	runForm($('#dlg-rotate'), async () => {
		const grace = $('#rotate-grace').value;
		const res = await api('POST', 'keys/' + encodeURIComponent(current.id) + '/rotate', { grace: grace });
		await loadKeys();
		return () => showSecret(res.new, res.old, grace);
	});

	runForm($('#dlg-delete'), async () => {
		const k = current;
		await api('DELETE', 'keys/' + encodeURIComponent(k.id));
		await loadKeys();
		return () => toast('Key ' + k.name + ' deleted. It no longer works.');
	});

	// ---- usage ------------------------------------------------------------

	const SVG = 'http://www.w3.org/2000/svg';
	function svg(tag, attrs, text) {
		const e = document.createElementNS(SVG, tag);
		for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
		if (text != null) e.textContent = text;
		return e;
	}

	// niceMax rounds a maximum up to 1, 2 or 5 times a power of ten.
	function niceMax(v) {
		if (v <= 0) return 1;
		const p = Math.pow(10, Math.floor(Math.log10(v)));
		for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
		return 10 * p;
	}

	function fmtAxis(v) {
		if (v === 0) return '0';
		if (v >= 100) return numFmt.format(Math.round(v));
		return String(Number(v.toPrecision(3)));
	}

	function renderChart(days, total) {
		const box = $('#chart');
		box.replaceChildren();
		const W = 760, H = 240, L = 56, R = 8, T = 12, B = 28;
		const pw = W - L - R, ph = H - T - B;
		const costs = days.map((d) => d.cost_nano / 1e9);
		const max = niceMax(Math.max(...costs));
		const root = svg('svg', {
			viewBox: '0 0 ' + W + ' ' + H, class: 'chart-svg', role: 'img',
			'aria-label': 'Spend per day over the last ' + days.length + ' days; total ' + money(total.cost),
		});
		for (let i = 0; i <= 4; i++) {
			const v = max * i / 4;
			const y = T + ph - ph * i / 4;
			root.append(svg('line', { x1: L, x2: W - R, y1: y, y2: y, class: i === 0 ? 'axis' : 'grid' }));
			root.append(svg('text', { x: L - 8, y: y + 4, class: 'tick', 'text-anchor': 'end' }, fmtAxis(v)));
		}
		const slot = pw / days.length;
		const bw = Math.max(2, slot * 0.68);
		const labelEvery = days.length <= 10 ? 1 : Math.ceil(days.length / 6);
		days.forEach((d, i) => {
			const x = L + slot * i + (slot - bw) / 2;
			const h = costs[i] > 0 ? Math.max(2, ph * costs[i] / max) : 0;
			const g = svg('g', { class: 'bar-group' });
			g.append(svg('rect', { x: x - (slot - bw) / 2, y: T, width: slot, height: ph, class: 'hover' }));
			if (h > 0) g.append(svg('rect', { x: x, y: T + ph - h, width: bw, height: h, rx: Math.min(3, bw / 3), class: 'bar' }));
			const day = new Date(d.group + 'T00:00:00Z');
			const label = day.toLocaleDateString(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
			g.append(svg('title', {}, label + ': ' + money(d.cost) + ', ' + numFmt.format(d.requests) + ' request' + (d.requests === 1 ? '' : 's')));
			root.append(g);
			if ((days.length - 1 - i) % labelEvery === 0) {
				root.append(svg('text', { x: L + slot * i + slot / 2, y: H - 8, class: 'tick', 'text-anchor': 'middle' }, label));
			}
		});
		box.append(root);
	}

	function tokens(t) { return numFmt.format(t.prompt_tokens) + ' / ' + numFmt.format(t.completion_tokens); }

	function fillTotals(tableSel, bodySel, emptySel, rows, label) {
		const body = $(bodySel);
		body.replaceChildren();
		$(tableSel).hidden = rows.length === 0;
		$(emptySel).hidden = rows.length > 0;
		for (const t of rows.slice().sort((a, b) => b.cost_nano - a.cost_nano)) {
			body.append(el('tr', {},
				el('td', { 'data-label': 'Name' }, label(t)),
				el('td', { class: 'num', 'data-label': 'Requests' }, numFmt.format(t.requests)),
				el('td', { class: 'num', 'data-label': 'Tokens in / out' }, tokens(t)),
				el('td', { class: 'num', 'data-label': 'Cost' }, money(t.cost))));
		}
	}

	function keyLabel(id, name) {
		if (!id) return el('span', { class: 'muted', text: '—' });
		if (name) return el('span', { title: id, text: name });
		return el('span', { class: 'muted', title: id, text: 'Deleted key' });
	}

	async function loadUsage() {
		const u = await api('GET', 'usage?days=' + state.days);
		const a = u.account;
		$('#stat-balance').textContent = money(a.balance);
		$('#stat-balance').classList.toggle('negative', a.balance_nano <= 0);
		$('#stat-held').textContent = a.held_nano > 0 ? money(a.held) + ' held by requests in progress' : 'Available for requests';
		$('#stat-spend-title').textContent = 'Spent, last ' + u.days + ' days';
		$('#stat-spend').textContent = money(u.total.cost);
		$('#stat-spend-sub').textContent = 'since ' + fmtDate(u.since + 'T00:00:00Z');
		$('#stat-requests').textContent = numFmt.format(u.total.requests);
		$('#stat-tokens').textContent = tokens(u.total) + ' tokens in / out';
		const hasUsage = u.total.requests > 0;
		$('#chart').hidden = !hasUsage;
		$('#chart-empty').hidden = hasUsage;
		if (hasUsage) renderChart(u.by_day, u.total);
		$('#chart-title').textContent = 'Spend per day (' + currency() + ')';
		fillTotals('#models-table', '#models-body', '#models-empty', u.by_model, (t) => t.group || '(none)');
		fillTotals('#bykey-table', '#bykey-body', '#bykey-empty', u.by_key, (t) => keyLabel(t.group, t.name));
		const body = $('#recent-body');
		body.replaceChildren();
		$('#recent-table').hidden = u.recent.length === 0;
		$('#recent-empty').hidden = u.recent.length > 0;
		for (const r of u.recent) {
			const usage = r.kind === 'usage';
			const what = usage
				? el('span', {}, r.model || 'request', r.estimated ? el('span', { class: 'badge', title: 'Charged by estimate: the provider reported no usage', text: 'est.' }) : null)
				: el('span', {}, el('span', { class: 'badge ' + (r.amount_nano >= 0 ? 'good' : 'warn'), text: r.amount_nano >= 0 ? 'Top-up' : 'Correction' }), ' ', r.note || '');
			body.append(el('tr', {},
				el('td', { 'data-label': 'Time', title: r.created_at }, fmtDateTime(r.created_at)),
				el('td', { 'data-label': 'What' }, what),
				el('td', { 'data-label': 'Key' }, usage ? keyLabel(r.key_id, r.key_name) : ''),
				el('td', { class: 'num', 'data-label': 'Tokens in / out' }, usage ? tokens(r) : ''),
				el('td', { class: 'num', 'data-label': 'Status' }, usage && r.status ? String(r.status) : ''),
				el('td', { class: 'num ' + (r.amount_nano < 0 ? 'neg' : 'pos'), 'data-label': 'Amount' }, money(r.amount, false)),
				el('td', { class: 'num', 'data-label': 'Balance after' }, money(r.balance_after, false))));
		}
		updateAccountBanner(a);
	}

	$('#period').addEventListener('change', () => {
		state.days = Number($('#period').value) || 30;
		loadUsage().catch(showError);
	});

	// ---- accounts (admins) ------------------------------------------------

	function fillAccountSelect() {
		const sel = $('#account-select');
		sel.replaceChildren();
		for (const a of state.session.accounts || []) {
			sel.append(el('option', { value: a.id, selected: a.id === state.account }, a.name && a.name !== a.id ? a.id + ' — ' + a.name : a.id));
		}
	}

	$('#account-select').addEventListener('change', () => {
		state.account = $('#account-select').value;
		go(state.view);
	});

	function openNewAccount() {
		$('#account-id').value = '';
		$('#account-name').value = '';
		openDialog($('#dlg-account'), '#account-id');
	}
	$('#new-account').addEventListener('click', openNewAccount);
	$('#create-account-empty').addEventListener('click', openNewAccount);

	runForm($('#dlg-account'), async () => {
		const a = await api('POST', 'accounts', { id: $('#account-id').value.trim(), name: $('#account-name').value.trim() });
		state.account = a.id;
		return () => { toast('Account ' + a.id + ' created.'); go(state.view); };
	});

	$('#adjust-balance').addEventListener('click', () => {
		const a = state.session.account;
		$('#balance-which').textContent = a.id;
		$('#balance-now').textContent = money(a.balance);
		$('#balance-amount').value = '';
		$('#balance-note').value = '';
		openDialog($('#dlg-balance'), '#balance-amount');
	});

	runForm($('#dlg-balance'), async () => {
		const amount = $('#balance-amount').value.trim();
		if (!amount) throw new Error('Enter an amount.');
		const res = await api('POST', 'balance', { amount: amount, note: $('#balance-note').value.trim() });
		state.session.account = res.account;
		return () => { toast('Balance is now ' + money(res.account.balance) + '.'); loadUsage().catch(showError); };
	});

	// ---- views ------------------------------------------------------------

	function updateAccountBanner(a) {
		if (!a) { showBanner('', ''); return; }
		if (a.disabled) {
			showBanner('error', 'Account ' + a.id + ' is disabled: its keys are refused (403 account_disabled). Ask the operator to enable it.');
		} else if (a.balance_nano <= 0) {
			showBanner('warn', state.session.admin
				? 'Account ' + a.id + ' has no balance left: its requests are refused (403 insufficient_balance). Top it up with “Adjust balance” on the Balance & usage page.'
				: 'Your balance is used up: requests are refused (403 insufficient_balance) until the operator tops the account up.');
		} else {
			showBanner('', '');
		}
	}

	function showError(err) {
		if (err && err.code && err.code.startsWith('csrf')) return; // banner already shown
		showBanner('error', err.message || String(err));
	}

	function parseHash() {
		const h = location.hash.replace(/^#/, '');
		const [view, query] = h.split('?');
		const params = new URLSearchParams(query || '');
		return { view: view === 'usage' ? 'usage' : 'keys', account: params.get('account') || '' };
	}

	function writeHash() {
		let h = '#' + state.view;
		if (state.session && state.session.admin && state.account) h += '?account=' + encodeURIComponent(state.account);
		if (location.hash !== h) history.replaceState(null, '', h);
	}

	let loading = 0;
	async function go(view, focusHeading) {
		state.view = view;
		const seq = ++loading;
		try {
			state.session = await api('GET', 'session');
		} catch (err) {
			if (err.code === 'store_unavailable') {
				// the gateway's store is closed or was switched by a reload:
				// show nothing of the old one, and never "no account"
				for (const id of ['#view-none', '#view-keys', '#view-usage']) $(id).hidden = true;
				throw err;
			}
			if (state.account && (err.status === 404 || err.code === 'admin_only')) {
				// an account that no longer exists, or a user who may not
				// choose: fall back to the default
				state.account = '';
				return go(view, focusHeading);
			}
			throw err;
		}
		if (seq !== loading) return;
		const s = state.session;
		if (s.admin && !s.account && s.accounts && s.accounts.length > 0) {
			// an admin without an account of their own: show the first
			state.account = s.accounts[0].id;
			return go(view, focusHeading);
		}
		if (s.account) state.account = s.admin ? s.account.id : '';
		$('#user-name').textContent = s.user;
		$('#account-switch').hidden = !s.admin;
		$('#adjust-balance').hidden = !s.admin;
		if (s.admin) fillAccountSelect();
		writeHash();
		const none = !s.account;
		$('#view-none').hidden = !none;
		$('#view-keys').hidden = none || view !== 'keys';
		$('#view-usage').hidden = none || view !== 'usage';
		for (const a of $$('.tabs a')) {
			if (a.getAttribute('data-view') === view && !none) a.setAttribute('aria-current', 'page');
			else a.removeAttribute('aria-current');
		}
		if (none) { showBanner('', ''); return; }
		updateAccountBanner(s.account);
		const title = s.account.name && s.account.name !== s.account.id ? s.account.name : s.account.id;
		document.title = (view === 'keys' ? 'API keys' : 'Balance & usage') + ' · ' + title + ' · AI Gateway';
		if (view === 'keys') await loadKeys();
		else await loadUsage();
		if (focusHeading) {
			const h = $(view === 'keys' ? '#keys-title' : '#usage-title');
			h.setAttribute('tabindex', '-1');
			h.focus();
		}
	}

	window.addEventListener('hashchange', () => {
		const h = parseHash();
		if (h.account) state.account = h.account;
		go(h.view, true).catch(showError);
	});

	const start = parseHash();
	state.account = start.account;
	go(start.view).catch(showError).finally(() => document.body.setAttribute('data-ready', '1'));
})();
