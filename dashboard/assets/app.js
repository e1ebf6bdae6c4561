// AI Gateway dashboard. Plain JavaScript, no dependencies, no inline code:
// the page's Content-Security-Policy allows only this file. All URLs are
// relative, so the dashboard works under any path prefix. Data from the
// server is only ever put into the page as text (textContent, attributes),
// never as HTML.
'use strict';

(function () {
	const $ = (sel, root) => (root || document).querySelector(sel);
	const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
	let csrfToken = $('meta[name="csrf-token"]').getAttribute('content');

	const VIEWS = ['keys', 'usage', 'log', 'audit', 'accounts'];
	const TITLES = { keys: 'API keys', usage: 'Balance & usage', log: 'Usage log', audit: 'Audit', accounts: 'Accounts' };

	const state = {
		session: null,   // answer of api/session
		account: '',     // account shown (admins choose it)
		view: 'keys',    // the view asked for
		shown: '',       // the view on screen ('' before the first one)
		keys: [],
		days: 30,
		usage: null,     // last answer of api/usage
		log: { cursors: [''], page: 0, next: null },
		audit: { cursors: [''], page: 0, next: null },
	};

	// ---- API ---------------------------------------------------------------

	// sentence makes a server message read as a sentence: capital first
	// letter, a full stop at the end.
	function sentence(msg) {
		let s = String(msg || '').trim();
		if (!s) return s;
		s = s.charAt(0).toUpperCase() + s.slice(1);
		if (!/[.!?…]$/.test(s)) s += '.';
		return s;
	}

	const messages = {
		0: 'The dashboard cannot reach the server. Check your connection and try again.',
		401: 'You are no longer signed in: your password may have been changed or your login expired. Reload the page to sign in again.',
		store_unavailable: 'The gateway’s database is unavailable, so nothing can be shown or changed right now. Try again in a moment; if this persists, tell the operator of this gateway.',
		csrf: 'Your session on this page could not be renewed. Reload the page and try again.',
	};

	class APIError extends Error {
		constructor(status, body) {
			const e = (body && body.error) || {};
			let msg = e.message ? sentence(e.message) : 'The server answered ' + status + '. Try again; if it persists, tell the operator.';
			if (status === 401) msg = messages[401];
			if (e.code === 'store_unavailable') msg = messages.store_unavailable;
			super(msg);
			this.status = status;
			this.code = e.code || '';
		}
	}

	function withAccount(path, account) {
		// before the first answer the page does not know whether the user is
		// an admin: it sends the account from the address, and drops it if
		// the server says only admins may choose
		const a = account === undefined ? state.account : account;
		if (!a || (state.session && !state.session.admin)) return path;
		return path + (path.includes('?') ? '&' : '?') + 'account=' + encodeURIComponent(a);
	}

	// renewToken fetches the page again and takes the CSRF token from it:
	// a page that stayed open while the server's secret changed keeps
	// working without losing what the user typed.
	async function renewToken() {
		const resp = await fetch(location.pathname + location.search, { credentials: 'same-origin', cache: 'no-store' });
		if (!resp.ok) return false;
		const doc = new DOMParser().parseFromString(await resp.text(), 'text/html');
		const m = doc.querySelector('meta[name="csrf-token"]');
		const t = m && m.getAttribute('content');
		if (!t || t === csrfToken) return false;
		csrfToken = t;
		return true;
	}

	async function api(method, path, body, opts) {
		opts = opts || {};
		const req = {
			method: method,
			headers: { 'Accept': 'application/json' },
			credentials: 'same-origin',
			cache: 'no-store',
		};
		if (method !== 'GET') {
			req.headers['X-CSRF-Token'] = csrfToken;
			req.headers['Content-Type'] = 'application/json';
			req.body = JSON.stringify(body || {});
		}
		let resp;
		try {
			resp = await fetch('api/' + withAccount(path, opts.account), req);
		} catch (err) {
			throw new APIError(0, { error: { message: messages[0] } });
		}
		let data = null;
		try { data = await resp.json(); } catch (err) { /* not JSON */ }
		if (!resp.ok) {
			const e = new APIError(resp.status, data);
			if (e.code === 'csrf_token' && !opts.retried) {
				let renewed = false;
				try { renewed = await renewToken(); } catch (err) { renewed = false; }
				if (renewed) return api(method, path, body, Object.assign({}, opts, { retried: true }));
				e.message = messages.csrf;
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
		let v = String(s == null || s === '' ? '0' : s);
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

	// nanoAmount turns nano-units into a decimal string.
	function nanoAmount(n) {
		if (typeof n !== 'number') return String(n == null ? '' : n);
		const neg = n < 0, a = Math.abs(n);
		const f = String(a % 1e9).padStart(9, '0').replace(/0+$/, '');
		return (neg ? '-' : '') + Math.floor(a / 1e9) + (f ? '.' + f : '');
	}

	function plural(n, one, many) { return numFmt.format(n) + ' ' + (n === 1 ? one : (many || one + 's')); }

	// ---- feedback ---------------------------------------------------------

	let toastTimer = 0;
	function toast(msg) {
		const t = $('#toast');
		t.textContent = msg;
		t.classList.add('show');
		clearTimeout(toastTimer);
		toastTimer = setTimeout(() => t.classList.remove('show'), 3500);
	}

	// The account's standing (disabled, no balance) shows in #banner; errors
	// of what the user just did in #error, cleared when the next action
	// starts.
	function showBanner(kind, msg, action) {
		const b = $('#banner');
		b.className = 'banner ' + kind;
		$('#banner-text').textContent = msg;
		const btn = $('#banner-action');
		btn.hidden = !action;
		bannerAction = action ? action.run : null;
		if (action) btn.textContent = action.label;
		b.hidden = !msg;
	}
	let bannerAction = null;
	$('#banner-action').addEventListener('click', () => {
		if (bannerAction) act(bannerAction);
	});

	function showError(err) {
		const b = $('#error');
		b.textContent = err ? (err.message || String(err)) : '';
		b.hidden = !err;
	}
	function clearError() { showError(null); }

	// act runs something the user started: the old error goes, a new one
	// shows.
	function act(fn) {
		clearError();
		return Promise.resolve().then(fn).catch(showError);
	}

	// ---- dialogs ----------------------------------------------------------

	const openers = new WeakMap();

	function openDialog(dlg, focusSel) {
		openers.set(dlg, document.activeElement);
		clearFormError(dlg);
		dlg.showModal();
		const f = focusSel ? $(focusSel, dlg) : $('input, select, button', dlg);
		if (f) { f.focus(); if (f.select && f.tagName === 'INPUT') f.select(); }
	}

	function restoreFocus(dlg, fallback) {
		const o = openers.get(dlg);
		openers.delete(dlg);
		if (o && o.isConnected && !o.disabled && o.offsetParent !== null) o.focus();
		else if (fallback && fallback.isConnected && fallback.offsetParent !== null) fallback.focus();
		else $('#main').focus();
	}

	function clearFormError(dlg) {
		const err = $('.form-error', dlg);
		if (err) { err.hidden = true; err.textContent = ''; }
	}

	function formError(dlg, err) {
		const p = $('.form-error', dlg);
		p.textContent = err.message;
		p.hidden = false;
	}

	// runForm wires a dialog form: submit runs action (async); on success
	// the dialog closes; on failure the error shows in the dialog and what
	// was typed stays.
	function runForm(dlg, action) {
		const form = $('form', dlg);
		form.addEventListener('submit', async (ev) => {
			ev.preventDefault();
			const submit = $('button[type="submit"]', form);
			submit.disabled = true;
			clearFormError(dlg);
			clearError();
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

	// confirmAction asks before something that cannot be taken back lightly.
	let confirmRun = null;
	function confirmAction(title, text, label, danger, run) {
		$('#dlg-confirm-title').textContent = title;
		$('#dlg-confirm-text').textContent = text;
		const b = $('#confirm-submit');
		b.textContent = label;
		b.className = danger ? 'danger' : 'primary';
		confirmRun = run;
		openDialog($('#dlg-confirm'), '#confirm-submit');
	}
	runForm($('#dlg-confirm'), () => confirmRun());

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
		askDiscard(false);
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
		askDiscard(false);
	}
	// askDiscard shows (or hides) the question whether to close the dialog
	// without the key: Esc must not lose it silently.
	function askDiscard(on) {
		$('#secret-confirm').hidden = !on;
		$('#secret-buttons').hidden = on;
		if (on) $('#secret-back').focus();
	}
	$('#secret-done').addEventListener('click', () => {
		forgetSecret();
		$('#dlg-secret').close();
	});
	$('#secret-back').addEventListener('click', () => { askDiscard(false); $('#secret-copy').focus(); });
	$('#secret-discard').addEventListener('click', () => { forgetSecret(); $('#dlg-secret').close(); });
	$('#dlg-secret').addEventListener('keydown', (ev) => {
		if (ev.key === 'Escape') { ev.preventDefault(); askDiscard(true); }
	});
	$('#dlg-secret').addEventListener('cancel', (ev) => {
		if ($('#secret-value').value) { ev.preventDefault(); askDiscard(true); }
	});

	// ---- keys -------------------------------------------------------------

	function keyByID(id) { return state.keys.find((k) => k.id === id); }

	// statusOf is a key's state: active, disabled, expiring, expired or
	// rotated (older servers send only active/expired).
	function statusOf(k) {
		if (k.status && k.status !== 'active') return k.status;
		if (k.disabled) return 'disabled';
		if (k.replaced_by) return 'rotated';
		return 'active';
	}

	const statusBadges = {
		active: ['good', 'Active'],
		disabled: ['bad', 'Disabled'],
		expiring: ['warn', 'Expiring soon'],
		expired: ['bad', 'Expired'],
		rotated: ['warn', 'Rotated'],
	};
	function isAdmin() { return !!(state.session && state.session.admin); }

	function keyStatus(k) {
		const st = statusOf(k);
		let [cls, text] = statusBadges[st] || ['', st];
		if (st === 'disabled' && k.disabled_by_admin) text = 'Disabled by the operator';
		return el('span', { class: 'badge ' + cls, 'data-status': st, text: text });
	}

	const periodNames = { month: 'per month', day: 'per day', total: 'in total' };
	const rateNames = {
		rpm: 'requests per minute', rpd: 'requests per day', rph: 'requests per hour',
		tpm: 'tokens per minute', tpd: 'tokens per day', tph: 'tokens per hour',
		concurrency: 'requests at once',
	};

	// policyLines are what limits a key: allowed models, spend limit, rate
	// limits.
	function policyLines(k) {
		const out = [];
		const models = k.allowed_models || [];
		out.push(el('li', { 'data-policy': 'models' }, el('span', { class: 'muted', text: 'Models: ' }),
			models.length ? models.join(', ') : 'all'));
		const l = k.spend_limit;
		if (l) {
			const parts = [money(l.amount) + ' ' + (periodNames[l.period] || l.period)];
			if (l.spent != null) parts.push(money(l.spent, false) + ' spent');
			if (l.remaining != null) parts.push(money(l.remaining, false) + ' left');
			if (l.resets_at) parts.push('resets ' + fmtDateTime(l.resets_at));
			out.push(el('li', { 'data-policy': 'spend', class: l.remaining_nano === 0 ? 'exhausted' : null },
				el('span', { class: 'muted', text: 'Spend limit: ' }), parts.join(' · ')));
		} else {
			out.push(el('li', { 'data-policy': 'spend' }, el('span', { class: 'muted', text: 'Spend limit: ' }), 'none'));
		}
		const ap = k.admin_policy;
		if (ap && ((ap.allowed_models && ap.allowed_models.length) || ap.spend_limit)) {
			const parts = [];
			if (ap.allowed_models && ap.allowed_models.length) parts.push('models ' + ap.allowed_models.join(', '));
			if (ap.spend_limit) parts.push(money(ap.spend_limit.amount != null ? ap.spend_limit.amount : nanoAmount(ap.spend_limit.amount_nano)) + ' ' + (periodNames[ap.spend_limit.period] || ap.spend_limit.period));
			out.push(el('li', { 'data-policy': 'operator' }, el('span', { class: 'muted', text: 'Set by the operator (you can only narrow it): ' }), parts.join(' · ')));
		}
		out.push(...rateLines(k.rate_limits));
		return el('ul', { class: 'policy' }, ...out);
	}

	// rateLines shows rate limits as they come from the server: each with
	// its kind, scope, use and reset, whatever kinds there are.
	function rateLines(limits) {
		return (limits || []).map((r) => {
			let t = numFmt.format(r.limit) + ' ' + (rateNames[r.kind] || r.kind);
			const scope = [r.scope && r.scope !== 'key' ? r.scope : '', r.name || ''].filter((x) => x).join(' ');
			if (scope) t += ' (' + scope + ')';
			if (r.used != null) t += ' · ' + numFmt.format(r.used) + ' used';
			if (r.resets_at) t += ' · resets ' + fmtDateTime(r.resets_at);
			if (r.default) t += ' · gateway default';
			return el('li', { 'data-policy': 'rate', 'data-kind': r.kind }, el('span', { class: 'muted', text: 'Rate limit: ' }), t);
		});
	}

	// ---- rate limits (operators set them) ------------------------------------

	const rateKinds = ['rpm', 'tpm', 'concurrency', 'rpd', 'tpd'];

	// ownRates are the limits of a scope that are its own (not the
	// gateway's defaults), by kind.
	function ownRates(limits, scope) {
		const own = {};
		for (const r of limits || []) if (r.scope === scope && !r.default) own[r.kind] = r.limit;
		return own;
	}

	// fillRates puts limits in the inputs of a form (ids prefix-kind).
	function fillRates(prefix, own) {
		for (const k of rateKinds) $('#' + prefix + '-' + k).value = own[k] != null ? String(own[k]) : '';
	}

	// rateChanges are the kinds changed in the inputs, as the rate_limits
	// of a PATCH (null removes a kind), or null when none changed.
	function rateChanges(prefix, own) {
		let out = null;
		for (const k of rateKinds) {
			const v = $('#' + prefix + '-' + k).value.trim();
			if (v && !/^\d+$/.test(v)) throw new Error('The limit of ' + rateNames[k] + ' must be a whole number such as 60, or empty for none.');
			const n = v ? Number(v) : 0;
			if (n !== (own[k] || 0)) {
				out = out || {};
				out[k] = n || null;
			}
		}
		return out;
	}

	function renderKeys() {
		const body = $('#keys-body');
		body.replaceChildren();
		const has = state.keys.length > 0;
		$('#keys-empty').hidden = has;
		$('#keys-table').hidden = !has;
		for (const k of state.keys) {
			const st = statusOf(k);
			let expires = 'Never';
			if (k.expires_at) expires = (st === 'expired' ? 'Expired ' : '') + fmtDateTime(k.expires_at);
			const disabled = st === 'disabled' || k.disabled;
			const btn = (action, text, label, cls) => el('button', { type: 'button', class: 'ghost small' + (cls ? ' ' + cls : ''),
				'data-action': action, 'data-key': k.id, 'aria-label': label + ' ' + k.name, text: text });
			const actions = el('div', { class: 'row-actions' },
				btn('edit', 'Edit', 'Edit key'),
				st === 'rotated' || st === 'expired' || (disabled && k.disabled_by_admin && !isAdmin()) ? null
					: (disabled ? btn('enable', 'Enable', 'Enable key') : btn('disable', 'Disable', 'Disable key')),
				st === 'rotated' ? null : btn('rotate', 'Rotate', 'Rotate key'),
				btn('delete', 'Delete', 'Delete key', 'danger-text'));
			body.append(el('tr', { 'data-key': k.id, class: disabled ? 'off' : null },
				el('td', { 'data-label': 'Name', class: 'name-cell' },
					el('div', { class: 'name-line' }, el('span', { class: 'key-name', text: k.name }), ' ', keyStatus(k)),
					policyLines(k)),
				el('td', { 'data-label': 'Key' }, el('code', { text: k.hint })),
				el('td', { 'data-label': 'Created', title: k.created_at, class: 'nowrap' }, fmtDate(k.created_at)),
				el('td', { 'data-label': 'Last used', title: k.last_used_at || '', class: 'last-used nowrap' }, fmtAgo(k.last_used_at)),
				el('td', { 'data-label': 'Expires', title: k.expires_at || '' }, expires),
				el('td', { class: 'actions-cell' }, actions)));
		}
	}

	async function loadKeys() {
		const data = await api('GET', 'keys');
		state.keys = data.keys || [];
		renderKeys();
	}

	let current = null; // the key a dialog is about

	$('#keys-body').addEventListener('click', (ev) => {
		const b = ev.target.closest('button[data-action]');
		if (!b) return;
		const k = keyByID(b.getAttribute('data-key'));
		if (!k) return;
		const action = b.getAttribute('data-action');
		current = k;
		clearError();
		if (action === 'edit') {
			$('#edit-name').value = k.name;
			$('#edit-models').value = (k.allowed_models || []).join(', ');
			$('#edit-limit').value = k.spend_limit ? k.spend_limit.amount : '';
			$('#edit-period').value = k.spend_limit ? k.spend_limit.period : 'month';
			$('#edit-rates').hidden = !isAdmin();
			fillRates('edit-rate', ownRates(k.rate_limits, 'key'));
			openDialog($('#dlg-edit'), '#edit-name');
		} else if (action === 'rotate') {
			$('#rotate-which').textContent = k.name + ' (' + k.hint + ')';
			$('#rotate-grace').value = '';
			openDialog($('#dlg-rotate'), '#rotate-grace');
		} else if (action === 'delete') {
			$('#delete-which').textContent = k.name + ' (' + k.hint + ')';
			openDialog($('#dlg-delete'), '[data-close]');
		} else if (action === 'disable') {
			confirmAction('Disable key?', 'While ' + k.name + ' (' + k.hint + ') is disabled, applications using it get 401 errors. You can enable it again at any time; nothing else changes.',
				'Disable key', true, async () => {
					await api('PATCH', 'keys/' + encodeURIComponent(k.id), { disabled: true });
					await loadKeys();
					return () => toast('Key ' + k.name + ' disabled.');
				});
		} else if (action === 'enable') {
			act(async () => {
				await api('PATCH', 'keys/' + encodeURIComponent(k.id), { disabled: false });
				await loadKeys();
				toast('Key ' + k.name + ' enabled.');
			});
		}
	});

	function openCreate() {
		clearError();
		$('#create-name').value = '';
		$('#create-expiry').value = '';
		$('#create-models').value = '';
		$('#create-limit').value = '';
		$('#create-period').value = 'month';
		openDialog($('#dlg-create'), '#create-name');
	}
	$('#create-key').addEventListener('click', openCreate);
	$('#create-key-empty').addEventListener('click', openCreate);

	function parseModels(s) {
		return s.split(',').map((m) => m.trim()).filter((m) => m);
	}

	// checkAmount catches the common mistakes before the server does.
	function checkAmount(s, what) {
		if (/^\d+,\d+$/.test(s)) throw new Error(what + ' uses a comma: write it with a dot, for example ' + s.replace(',', '.') + '.');
		if (!/^-?\d+(\.\d+)?$/.test(s)) throw new Error(what + ' must be a number such as 10.50.');
		return s;
	}

	runForm($('#dlg-create'), async () => {
		const name = $('#create-name').value.trim();
		if (!name) throw new Error('Give the key a name.');
		const req = { name: name, expires_in: $('#create-expiry').value };
		const models = parseModels($('#create-models').value);
		if (models.length) req.allowed_models = models;
		const limit = $('#create-limit').value.trim();
		if (limit) req.spend_limit = { amount: checkAmount(limit, 'The spend limit'), period: $('#create-period').value };
		const key = await api('POST', 'keys', req);
		await loadKeys();
		return () => showSecret(key);
	});

	runForm($('#dlg-edit'), async () => {
		const k = current;
		const name = $('#edit-name').value.trim();
		if (!name) throw new Error('Give the key a name.');
		const req = {};
		if (name !== k.name) req.name = name;
		const models = parseModels($('#edit-models').value);
		if (models.join(',') !== (k.allowed_models || []).join(',')) req.allowed_models = models;
		const limit = $('#edit-limit').value.trim();
		const period = $('#edit-period').value;
		const old = k.spend_limit;
		if (!limit && old) req.spend_limit = null;
		else if (limit && (!old || Number(limit) !== Number(old.amount) || period !== old.period)) {
			req.spend_limit = { amount: checkAmount(limit, 'The spend limit'), period: period };
		}
		if (isAdmin()) {
			const rates = rateChanges('edit-rate', ownRates(k.rate_limits, 'key'));
			if (rates) req.rate_limits = rates;
		}
		if (Object.keys(req).length === 0) return () => toast('Nothing changed.');
		await api('PATCH', 'keys/' + encodeURIComponent(k.id), req);
		await loadKeys();
		return () => toast('Key ' + name + ' saved.');
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

	// "Last used" and the spend of limits change while the page is open:
	// the list refreshes when the page comes back into view and every 30
	// seconds while it is visible.
	let refreshing = false;
	async function refreshKeys() {
		if (refreshing || state.shown !== 'keys' || document.visibilityState !== 'visible' || $('dialog[open]')) return;
		refreshing = true;
		try { await loadKeys(); } catch (err) { /* the next action reports it */ } finally { refreshing = false; }
	}
	document.addEventListener('visibilitychange', refreshKeys);
	window.addEventListener('focus', refreshKeys);
	setInterval(refreshKeys, 30000);

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

	// renderChart draws the spend per day at the size it is shown, so that
	// its labels have their real size (11 px and up) on any screen.
	function renderChart() {
		const u = state.usage;
		const box = $('#chart');
		box.replaceChildren();
		if (!u || u.total.requests === 0 || box.clientWidth === 0) return;
		const days = u.by_day;
		const W = Math.max(280, Math.floor(box.clientWidth)), H = W < 500 ? 200 : 240;
		const L = 48, R = 8, T = 12, B = 28;
		const pw = W - L - R, ph = H - T - B;
		const costs = days.map((d) => d.cost_nano / 1e9);
		const max = niceMax(Math.max(...costs));
		const root = svg('svg', {
			width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, class: 'chart-svg', role: 'img',
			'aria-label': 'Spend per day over the last ' + days.length + ' days; total ' + money(u.total.cost),
		});
		for (let i = 0; i <= 4; i++) {
			const v = max * i / 4;
			const y = T + ph - ph * i / 4;
			root.append(svg('line', { x1: L, x2: W - R, y1: y, y2: y, class: i === 0 ? 'axis' : 'grid' }));
			root.append(svg('text', { x: L - 8, y: y + 4, class: 'tick', 'text-anchor': 'end' }, fmtAxis(v)));
		}
		const slot = pw / days.length;
		const bw = Math.max(2, slot * 0.68);
		const maxLabels = Math.max(2, Math.floor(pw / 64));
		const labelEvery = Math.max(1, Math.ceil(days.length / maxLabels));
		days.forEach((d, i) => {
			const x = L + slot * i + (slot - bw) / 2;
			const h = costs[i] > 0 ? Math.max(2, ph * costs[i] / max) : 0;
			const g = svg('g', { class: 'bar-group' });
			g.append(svg('rect', { x: x - (slot - bw) / 2, y: T, width: slot, height: ph, class: 'hover' }));
			if (h > 0) g.append(svg('rect', { x: x, y: T + ph - h, width: bw, height: h, rx: Math.min(3, bw / 3), class: 'bar' }));
			const day = new Date(d.group + 'T00:00:00Z');
			const label = day.toLocaleDateString(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
			g.append(svg('title', {}, label + ': ' + money(d.cost) + ', ' + plural(d.requests, 'request')));
			root.append(g);
			if ((days.length - 1 - i) % labelEvery === 0) {
				// the last label ends at the right edge rather than past it
				const cx = L + slot * i + slot / 2;
				const end = cx + 24 > W;
				root.append(svg('text', { x: end ? W - 2 : cx, y: H - 8, class: 'tick', 'text-anchor': end ? 'end' : 'middle' }, label));
			}
		});
		box.append(root);
	}
	let resizeTimer = 0;
	window.addEventListener('resize', () => {
		clearTimeout(resizeTimer);
		resizeTimer = setTimeout(() => { if (state.shown === 'usage') renderChart(); }, 150);
	});

	function tokens(t) { return numFmt.format(t.prompt_tokens || 0) + ' / ' + numFmt.format(t.completion_tokens || 0); }

	function fillTotals(tableSel, bodySel, emptySel, rows, label) {
		const body = $(bodySel);
		body.replaceChildren();
		$(tableSel).hidden = rows.length === 0;
		$(emptySel).hidden = rows.length > 0;
		for (const t of rows.slice().sort((a, b) => b.cost_nano - a.cost_nano)) {
			body.append(el('tr', {},
				el('td', { 'data-label': 'Name', class: 'wrap' }, label(t)),
				el('td', { class: 'num', 'data-label': 'Requests' }, numFmt.format(t.requests)),
				el('td', { class: 'num opt', 'data-label': 'Tokens in / out' }, tokens(t)),
				el('td', { class: 'num', 'data-label': 'Cost' }, money(t.cost))));
		}
	}

	// keyLabel names the key of a usage row: its name even after it was
	// deleted or rotated away, marked so, so that two old keys never look
	// the same.
	function keyLabel(id, name, deleted) {
		if (!id) return el('span', { class: 'muted', text: '—' });
		const k = keyByID(id);
		const shown = (k && k.name) || name || 'key …' + id.slice(-6);
		let mark = null;
		if (!k || deleted) mark = el('span', { class: 'badge', 'data-status': 'deleted', text: 'deleted' });
		else if (statusOf(k) === 'rotated') mark = el('span', { class: 'badge warn', 'data-status': 'rotated', text: 'rotated' });
		return el('span', { title: id, class: 'key-label' }, el('span', { class: 'key-name-ref', text: shown }), mark ? ' ' : null, mark);
	}

	const RECENT = 10;

	async function loadUsage() {
		const [u, keys] = await Promise.all([api('GET', 'usage?days=' + state.days), api('GET', 'keys')]);
		state.keys = keys.keys || [];
		state.usage = u;
		const a = u.account;
		$('#stat-balance').textContent = money(a.balance);
		$('#stat-balance').classList.toggle('negative', a.balance_nano <= 0);
		$('#stat-held').textContent = a.held_nano > 0 ? money(a.held) + ' held by requests in progress' : 'Available for requests';
		$('#stat-limits').replaceChildren(...rateLines(a.rate_limits));
		$('#stat-spend-title').textContent = 'Spent, last ' + u.days + ' days';
		$('#stat-spend').textContent = money(u.total.cost);
		$('#stat-spend-sub').textContent = 'since ' + fmtDate(u.since + 'T00:00:00Z');
		$('#stat-requests').textContent = numFmt.format(u.total.requests);
		$('#stat-tokens').textContent = tokens(u.total) + ' tokens in / out';
		const hasUsage = u.total.requests > 0;
		$('#chart').hidden = !hasUsage;
		$('#chart-empty').hidden = hasUsage;
		renderChart();
		$('#chart-title').textContent = 'Spend per day (' + currency() + ')';
		fillTotals('#models-table', '#models-body', '#models-empty', u.by_model, (t) => t.group || '(none)');
		fillTotals('#bykey-table', '#bykey-body', '#bykey-empty', u.by_key, (t) => keyLabel(t.group, t.name, t.deleted));
		const body = $('#recent-body');
		body.replaceChildren();
		// the latest few: the usage log has every row
		const recent = u.recent.slice(0, RECENT);
		$('#recent-table').hidden = recent.length === 0;
		$('#recent-empty').hidden = recent.length > 0;
		for (const r of recent) {
			const usage = r.kind === 'usage';
			body.append(el('tr', {},
				el('td', { 'data-label': 'Time', title: r.created_at, class: 'time' }, fmtDateTime(r.created_at)),
				el('td', { 'data-label': 'What', class: 'what' }, whatOf(r)),
				el('td', { 'data-label': 'Key', class: 'key' }, usage ? keyLabel(r.key_id, r.key_name) : ''),
				el('td', { class: 'num tok', 'data-label': 'Tokens in / out' }, usage ? tokens(r) : ''),
				el('td', { class: 'num status' + (r.status >= 200 && r.status < 300 ? ' ok' : ''), 'data-label': 'Status' }, usage && r.status ? String(r.status) : ''),
				el('td', { class: 'num amount ' + (r.amount_nano < 0 ? 'neg' : 'pos'), 'data-label': 'Amount' }, money(r.amount, false)),
				el('td', { class: 'num opt', 'data-label': 'Balance after' }, money(r.balance_after, false))));
		}
		updateAccountBanner(a);
	}

	// whatOf describes a ledger row: the model of a request, or a top-up or
	// correction with its note.
	function whatOf(r) {
		if (!r.kind || r.kind === 'usage') {
			return el('span', {}, r.model || 'request', r.estimated ? el('span', { class: 'badge', title: 'Charged by estimate: the provider reported no usage', text: 'est.' }) : null);
		}
		const plus = (r.amount_nano != null ? r.amount_nano : r.cost_nano) >= 0;
		const label = r.kind === 'topup' || (r.kind !== 'correction' && plus) ? 'Top-up' : 'Correction';
		return el('span', {}, el('span', { class: 'badge ' + (label === 'Top-up' ? 'good' : 'warn'), text: label }), ' ', r.note || '');
	}

	$('#period').addEventListener('change', () => {
		state.days = Number($('#period').value) || 30;
		act(loadUsage);
	});

	// ---- usage log ----------------------------------------------------------

	const LOG_PAGE = 50;

	// dayStart turns a date field into the start of that day (UTC); the end
	// of a range is the start of the day after the one chosen.
	function dayStart(v, plusDays) {
		if (!v) return '';
		const d = new Date(v + 'T00:00:00Z');
		d.setUTCDate(d.getUTCDate() + (plusDays || 0));
		return d.toISOString().replace('.000Z', 'Z');
	}

	function logQuery() {
		const q = new URLSearchParams();
		const add = (k, v) => { if (v) q.set(k, v); };
		add('from', dayStart($('#log-from').value));
		add('to', dayStart($('#log-to').value, 1));
		add('key', $('#log-key').value);
		add('model', $('#log-model').value.trim());
		add('status', $('#log-status').value);
		add('kind', $('#log-kind').value);
		return q;
	}

	function fillKeyFilter() {
		const sel = $('#log-key');
		const was = sel.value;
		const seen = new Map();
		for (const k of state.keys) seen.set(k.id, k.name);
		for (const t of (state.usage && state.usage.by_key) || []) if (t.group && !seen.has(t.group)) seen.set(t.group, (t.name || 'key …' + t.group.slice(-6)) + ' (deleted)');
		sel.replaceChildren(el('option', { value: '' }, 'All keys'));
		for (const [id, name] of seen) sel.append(el('option', { value: id, selected: id === was }, name));
		const models = $('#log-models');
		models.replaceChildren();
		for (const t of (state.usage && state.usage.by_model) || []) if (t.group) models.append(el('option', { value: t.group }));
	}

	async function loadLog() {
		if (!state.usage || !state.keys.length) {
			const [u, keys] = await Promise.all([api('GET', 'usage?days=90'), api('GET', 'keys')]);
			state.usage = u;
			state.keys = keys.keys || [];
			state.days = u.days;
		}
		fillKeyFilter();
		const q = logQuery();
		const lg = state.log;
		const cursor = lg.cursors[lg.page];
		if (cursor) q.set('cursor', cursor);
		q.set('limit', String(LOG_PAGE));
		const res = await api('GET', 'usage/log?' + q.toString());
		const rows = res.rows || [];
		if (rows.length === 0 && lg.page > 0) {
			// the previous page was the last one after all: stay on it
			lg.page--;
			lg.next = null;
			$('#log-next').disabled = true;
			toast('No more rows: this is the last page.');
			return;
		}
		lg.next = res.next_cursor || null;
		const body = $('#log-body');
		body.replaceChildren();
		$('#log-table').hidden = rows.length === 0;
		$('#log-empty').hidden = rows.length > 0;
		for (const r of rows) {
			const usage = !r.kind || r.kind === 'usage';
			body.append(el('tr', { 'data-row': r.id },
				el('td', { 'data-label': 'Time', title: r.time, class: 'time' }, fmtDateTime(r.time)),
				el('td', { 'data-label': 'What', class: 'what' }, whatOf(r)),
				el('td', { 'data-label': 'Key', class: 'key' }, usage ? keyLabel(r.key_id, r.key_name, r.key_deleted) : ''),
				el('td', { class: 'num tok', 'data-label': 'Tokens in / out' }, usage ? tokens(r) : ''),
				el('td', { class: 'num opt', 'data-label': 'Cached' }, usage && r.cached_tokens ? numFmt.format(r.cached_tokens) : ''),
				el('td', { class: 'num status' + (r.status >= 200 && r.status < 300 ? ' ok' : ''), 'data-label': 'Status' }, usage && r.status ? String(r.status) : ''),
				el('td', { class: 'num amount' + (usage ? '' : ' pos'), 'data-label': usage ? 'Cost' : 'Amount' },
					usage ? money(r.cost, false) : (r.amount_nano >= 0 ? '+' : '') + money(r.amount, false))));
		}
		const t = res.totals || {};
		$('#log-totals').textContent = 'Selection: ' + plural(t.requests || 0, 'request') + ' · ' +
			tokens(t) + ' tokens in / out · ' + money(t.cost) + ' spent';
		const first = lg.page * LOG_PAGE;
		$('#log-page').textContent = rows.length ? 'Rows ' + numFmt.format(first + 1) + '–' + numFmt.format(first + rows.length) : '';
		$('#log-next').disabled = !lg.next;
		$('#log-first').disabled = lg.page === 0;
		const csvQ = logQuery();
		$('#log-csv').setAttribute('href', 'api/' + withAccount('usage/log.csv' + (csvQ.toString() ? '?' + csvQ.toString() : '')));
	}

	$('#log-filters').addEventListener('submit', (ev) => {
		ev.preventDefault();
		state.log = { cursors: [''], page: 0, next: null };
		act(loadLog);
	});
	$('#log-reset').addEventListener('click', () => {
		for (const id of ['#log-from', '#log-to', '#log-model']) $(id).value = '';
		$('#log-key').value = '';
		$('#log-status').value = '';
		$('#log-kind').value = '';
		state.log = { cursors: [''], page: 0, next: null };
		act(loadLog);
	});
	$('#log-next').addEventListener('click', () => {
		const lg = state.log;
		if (!lg.next) return;
		lg.cursors[lg.page + 1] = lg.next;
		const page = ++lg.page;
		act(loadLog).then(() => { if (state.log.page === page) $('#log-title').scrollIntoView(); });
	});
	$('#log-first').addEventListener('click', () => {
		state.log.page = 0;
		act(loadLog);
	});

	// ---- audit ----------------------------------------------------------------

	// detailText says what an audit entry changed: "name: a → b", one
	// field after the other.
	function detailText(d) {
		if (d == null) return '';
		if (typeof d !== 'object') return String(d);
		const show = (v) => v == null || v === '' ? '–' : (Array.isArray(v) ? (v.length ? v.join(', ') : 'all') : (typeof v === 'object' ? JSON.stringify(v) : String(v)));
		return Object.entries(d).filter(([k]) => !k.endsWith('_nano')).map(([k, v]) => {
			if (v && typeof v === 'object' && !Array.isArray(v) && ('old' in v || 'new' in v)) return k + ': ' + show(v.old) + ' → ' + show(v.new);
			return k + ': ' + show(v);
		}).join('; ');
	}

	async function loadAudit() {
		const admin = state.session && state.session.admin;
		$('#audit-account-field').hidden = !admin;
		$('#audit-lead').textContent = admin
			? 'Who changed what in every account: keys, balances and accounts, from the dashboard, the admin API and the command line.'
			: 'Who changed what in your account: keys and balance, from the dashboard, the admin API and the command line.';
		const q = new URLSearchParams();
		const add = (k, v) => { if (v) q.set(k, v); };
		if (admin) add('account', $('#audit-account').value.trim());
		add('action', $('#audit-action').value.trim());
		add('actor', $('#audit-actor').value.trim());
		add('from', dayStart($('#audit-from').value));
		add('to', dayStart($('#audit-to').value, 1));
		const au = state.audit;
		if (au.cursors[au.page]) q.set('cursor', au.cursors[au.page]);
		q.set('limit', '50');
		// the audit view of an admin is about all accounts unless filtered:
		// the account parameter is the filter, not the account shown
		const res = await api('GET', 'audit?' + q.toString(), null, { account: '' });
		au.next = res.next_cursor || null;
		const rows = res.entries || [];
		const body = $('#audit-body');
		body.replaceChildren();
		$('#audit-table').hidden = rows.length === 0;
		$('#audit-empty').hidden = rows.length > 0;
		const actions = $('#audit-actions');
		const known = new Set($$('option', actions).map((o) => o.value));
		for (const r of rows) {
			if (r.action && !known.has(r.action)) { known.add(r.action); actions.append(el('option', { value: r.action })); }
			body.append(el('tr', {},
				el('td', { 'data-label': 'Time', title: r.time, class: 'time nowrap' }, fmtDateTime(r.time)),
				el('td', { 'data-label': 'Actor', class: 'wrap' }, r.actor || ''),
				el('td', { 'data-label': 'Account', class: 'wrap' }, r.account || ''),
				el('td', { 'data-label': 'Action' }, el('code', { text: r.action || '' })),
				el('td', { 'data-label': 'Target', class: 'wrap' }, r.target || ''),
				el('td', { 'data-label': 'Detail', class: 'detail' }, detailText(r.detail))));
		}
		$('#audit-next').disabled = !au.next;
		$('#audit-first').disabled = au.page === 0;
	}
	$('#audit-filters').addEventListener('submit', (ev) => {
		ev.preventDefault();
		state.audit = { cursors: [''], page: 0, next: null };
		act(loadAudit);
	});
	$('#audit-next').addEventListener('click', () => {
		const au = state.audit;
		if (!au.next) return;
		au.cursors[au.page + 1] = au.next;
		au.page++;
		act(loadAudit);
	});
	$('#audit-first').addEventListener('click', () => { state.audit.page = 0; act(loadAudit); });

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
		navigate(state.view === 'accounts' ? 'keys' : state.view);
	});

	function openNewAccount() {
		clearError();
		$('#account-id').value = '';
		$('#account-name').value = '';
		openDialog($('#dlg-account'), '#account-id');
	}
	$('#new-account').addEventListener('click', openNewAccount);
	$('#create-account-empty').addEventListener('click', openNewAccount);

	runForm($('#dlg-account'), async () => {
		const a = await api('POST', 'accounts', { id: $('#account-id').value.trim(), name: $('#account-name').value.trim() });
		state.account = a.id;
		return () => { toast('Account ' + a.id + ' created.'); navigate(state.view === 'accounts' ? 'accounts' : 'keys'); };
	});

	let balanceAccount = null; // {id, balance} the balance dialog is about
	function openBalance(a) {
		clearError();
		balanceAccount = a;
		$('#balance-which').textContent = a.id;
		$('#balance-now').textContent = money(a.balance);
		$('#balance-amount').value = '';
		$('#balance-note').value = '';
		openDialog($('#dlg-balance'), '#balance-amount');
	}
	$('#adjust-balance').addEventListener('click', () => openBalance(state.session.account));

	runForm($('#dlg-balance'), async () => {
		const amount = checkAmount($('#balance-amount').value.trim() || '', 'The amount');
		const a = balanceAccount;
		const res = await api('POST', 'balance', { amount: amount, note: $('#balance-note').value.trim() }, { account: a.id });
		if (state.session.account && state.session.account.id === a.id) state.session.account = res.account;
		return () => {
			toast('Balance of ' + a.id + ' is now ' + money(res.account.balance) + '.');
			act(state.shown === 'accounts' ? loadAccounts : loadUsage);
		};
	});

	let ratesAccount = null; // the account the rate limits dialog is about
	function openRates(a) {
		clearError();
		ratesAccount = a;
		$('#rates-which').textContent = a.id;
		fillRates('rates', ownRates(a.rate_limits, 'account'));
		openDialog($('#dlg-rates'), '#rates-rpm');
	}

	runForm($('#dlg-rates'), async () => {
		const a = ratesAccount;
		const rates = rateChanges('rates', ownRates(a.rate_limits, 'account'));
		if (!rates) return () => toast('Nothing changed.');
		await api('PATCH', 'accounts/' + encodeURIComponent(a.id), { rate_limits: rates }, { account: '' });
		return () => { toast('Rate limits of ' + a.id + ' saved.'); act(loadAccounts); };
	});

	async function setAccountDisabled(id, disabled) {
		await api('PATCH', 'accounts/' + encodeURIComponent(id), { disabled: disabled }, { account: '' });
	}

	async function loadAccounts() {
		const q = new URLSearchParams();
		if ($('#accounts-q').value.trim()) q.set('q', $('#accounts-q').value.trim());
		if ($('#accounts-status').value) q.set('status', $('#accounts-status').value);
		const res = await api('GET', 'accounts' + (q.toString() ? '?' + q.toString() : ''), null, { account: '' });
		const rows = Array.isArray(res) ? res : (res.accounts || []);
		$('#accounts-currency').textContent = currency();
		const body = $('#accounts-body');
		body.replaceChildren();
		$('#accounts-table').hidden = rows.length === 0;
		$('#accounts-empty').hidden = rows.length > 0;
		for (const a of rows) {
			const off = a.disabled || a.status === 'disabled';
			const btn = (action, text, cls) => el('button', { type: 'button', class: 'ghost small' + (cls ? ' ' + cls : ''),
				'data-action': action, 'data-account': a.id, 'aria-label': text + ': ' + a.id, text: text });
			body.append(el('tr', { 'data-account': a.id, class: off ? 'off' : null },
				el('td', { 'data-label': 'Account', class: 'name-cell' }, el('span', { class: 'key-name', text: a.id }),
					a.name && a.name !== a.id ? el('div', { class: 'muted', text: a.name }) : null,
					el('div', { class: 'rates-cell' },
						el('ul', { class: 'rates' }, ...(a.rate_limits && a.rate_limits.length ? rateLines(a.rate_limits)
							: [el('li', { class: 'muted', text: 'Rate limits: none' })])),
						el('button', { type: 'button', class: 'ghost small', 'data-action': 'rates', 'data-account': a.id,
							'aria-label': 'Set rate limits of ' + a.id, text: 'Rate limits' }))),
				el('td', { class: 'num' + (a.balance_nano <= 0 ? ' negative' : ''), 'data-label': 'Balance' }, money(a.balance, false)),
				el('td', { class: 'num', 'data-label': 'Held' }, money(a.held, false)),
				el('td', { class: 'num', 'data-label': 'Spent this month' }, a.spend_month != null ? money(a.spend_month, false) : '–'),
				el('td', { class: 'num', 'data-label': 'Keys' }, a.keys != null ? numFmt.format(a.keys) : '–'),
				el('td', { 'data-label': 'Status' }, el('span', { class: 'badge ' + (off ? 'bad' : 'good'), text: off ? 'Disabled' : 'Active' })),
				el('td', { class: 'actions-cell' }, el('div', { class: 'row-actions' },
					btn('keys', 'Keys'), btn('usage', 'Usage'), btn('balance', 'Top up'),
					off ? btn('enable', 'Enable') : btn('disable', 'Disable', 'danger-text')))));
		}
		state.accountRows = rows;
	}

	$('#accounts-filters').addEventListener('submit', (ev) => { ev.preventDefault(); act(loadAccounts); });
	$('#accounts-body').addEventListener('click', (ev) => {
		const b = ev.target.closest('button[data-action]');
		if (!b) return;
		const id = b.getAttribute('data-account');
		const a = (state.accountRows || []).find((x) => x.id === id);
		if (!a) return;
		clearError();
		switch (b.getAttribute('data-action')) {
		case 'keys': state.account = id; navigate('keys'); break;
		case 'usage': state.account = id; navigate('usage'); break;
		case 'balance': openBalance(a); break;
		case 'rates': openRates(a); break;
		case 'enable':
			act(async () => { await setAccountDisabled(id, false); await loadAccounts(); toast('Account ' + id + ' enabled.'); });
			break;
		case 'disable':
			confirmAction('Disable account ' + id + '?', 'While the account is disabled, every request with one of its keys is refused (403 account_disabled). Its keys, balance and history stay; you can enable it again at any time.',
				'Disable account', true, async () => {
					await setAccountDisabled(id, true);
					await loadAccounts();
					return () => toast('Account ' + id + ' disabled.');
				});
			break;
		}
	});

	// ---- views ------------------------------------------------------------

	function updateAccountBanner(a) {
		if (!a) { showBanner('', ''); return; }
		const admin = state.session && state.session.admin;
		if (a.disabled) {
			if (admin) {
				showBanner('error', 'Account ' + a.id + ' is disabled: requests with its keys are refused (403 account_disabled).', {
					label: 'Enable account',
					run: async () => {
						await setAccountDisabled(a.id, false);
						toast('Account ' + a.id + ' enabled.');
						await navigate(state.view);
					},
				});
			} else {
				showBanner('error', 'This account is disabled: requests with its keys are refused (403 account_disabled). Ask the operator of this gateway to enable it.');
			}
		} else if (a.balance_nano <= 0) {
			showBanner('warn', admin
				? 'Account ' + a.id + ' has no balance left: its requests are refused (403 insufficient_balance). Top it up with “Adjust balance” on the Balance & usage page.'
				: 'Your balance is used up: requests are refused (403 insufficient_balance) until the operator tops the account up.');
		} else {
			showBanner('', '');
		}
	}

	function parseHash() {
		const h = location.hash.replace(/^#/, '');
		const [view, query] = h.split('?');
		const params = new URLSearchParams(query || '');
		return { view: VIEWS.includes(view) ? view : 'keys', account: params.get('account') || '' };
	}

	function writeHash(view) {
		let h = '#' + view;
		if (state.session && state.session.admin && state.account && view !== 'accounts') h += '?account=' + encodeURIComponent(state.account);
		if (location.hash !== h) history.replaceState(null, '', h);
	}

	// show puts a view on screen, with its tab marked, or none ('').
	function show(view) {
		state.shown = view;
		for (const v of VIEWS) $('#view-' + v).hidden = v !== view;
		$('#view-none').hidden = view !== 'none';
		for (const a of $$('.tabs a')) {
			if (a.getAttribute('data-view') === view) a.setAttribute('aria-current', 'page');
			else a.removeAttribute('aria-current');
		}
		if (view && view !== 'none') {
			writeHash(view);
			const a = state.session && state.session.account;
			const title = a ? (a.name && a.name !== a.id ? a.name : a.id) : '';
			document.title = TITLES[view] + (title && view !== 'accounts' ? ' · ' + title : '') + ' · AI Gateway';
		}
		if (view === 'usage') renderChart();
	}

	const loaders = { keys: loadKeys, usage: loadUsage, log: loadLog, audit: loadAudit, accounts: loadAccounts };

	// go loads a view and shows it once its data is there; if loading
	// fails, the view on screen (and its tab) stays as it was.
	let loading = 0;
	async function go(view, focusHeading) {
		const seq = ++loading;
		state.view = view;
		let s;
		try {
			s = await api('GET', 'session');
		} catch (err) {
			if (state.account && (err.status === 404 || err.code === 'admin_only')) {
				// an account that no longer exists, or a user who may not
				// choose: fall back to the default
				state.account = '';
				return go(view, focusHeading);
			}
			throw err;
		}
		if (seq !== loading) return;
		if (s.admin && !s.account && s.accounts && s.accounts.length > 0) {
			// an admin without an account of their own: show the first
			state.account = s.accounts[0].id;
			return go(view, focusHeading);
		}
		const changed = !state.session || !state.session.account || !s.account || state.session.account.id !== s.account.id;
		state.session = s;
		if (changed) { state.usage = null; state.log = { cursors: [''], page: 0, next: null }; }
		if (s.account) state.account = s.admin ? s.account.id : '';
		$('#user-name').textContent = s.user;
		$('#account-switch').hidden = !s.admin;
		$('#adjust-balance').hidden = !s.admin;
		$('#tab-accounts').hidden = !s.admin;
		if (s.admin) fillAccountSelect();
		if (view === 'accounts' && !s.admin) view = 'keys';
		if (!s.account && view !== 'accounts' && view !== 'audit') {
			showBanner('', '');
			show('none');
			return;
		}
		updateAccountBanner(s.account);
		await loaders[view]();
		if (seq !== loading) return;
		show(view);
		if (focusHeading) {
			const h = $('#' + view + '-title');
			h.setAttribute('tabindex', '-1');
			h.focus();
		}
	}

	// navigate is go as the user's action: errors show, and a view that
	// could not load leaves the one on screen (tab, address) as it was.
	async function navigate(view, focusHeading) {
		clearError();
		try {
			await go(view, focusHeading);
		} catch (err) {
			if (err.code === 'store_unavailable' || err.status === 401) {
				// show nothing of what may be stale, and never "no account"
				showBanner('', '');
				show('');
			} else if (state.shown) {
				state.view = state.shown;
				show(state.shown);
			}
			showError(err);
		}
	}

	window.addEventListener('hashchange', () => {
		const h = parseHash();
		if (h.account) state.account = h.account;
		if (h.view === state.shown && !h.account) return;
		navigate(h.view, true);
	});

	const start = parseHash();
	state.account = start.account;
	navigate(start.view).finally(() => document.body.setAttribute('data-ready', '1'));
})();
