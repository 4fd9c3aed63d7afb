// The desktop face's page: polls the node's status and waiting install requests, and
// sends the person's decisions, keys and pairing requests to the node's /api/.
// Every text from the node (app names come from the marketplace) goes in as text,
// never as HTML; the only markup inserted is the QR code's SVG the node drew.
'use strict';

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const init = body === undefined
    ? {}
    : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  let data = {};
  try { data = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) {
    throw new Error(data.error || `${response.status} ${response.statusText}`);
  }
  return data;
}

function say(id, text, isError) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle('error', Boolean(isError));
}

function element(tag, text, attrs) {
  const el = document.createElement(tag);
  if (text !== undefined) el.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

async function refreshStatus() {
  try {
    const s = await api('/api/status');
    const status = $('status');
    if (s.connected) {
      status.textContent = `Connected to the relay over ${String(s.transport || '').toUpperCase()}`;
      status.className = 'status online';
    } else {
      status.textContent = 'Not connected to the relay (trying again)';
      status.className = 'status offline';
    }
    const apps = s.apps.length === 1 ? '1 app' : `${s.apps.length} apps`;
    $('status-detail').textContent =
      `Relay ${s.relay} · device ${s.device_id} · ${s.running} running, ${s.queued} waiting · ${apps} · node ${s.node_version} · AI provider ${s.provider}`;
    $('log-dir').textContent = s.log_dir;
  } catch (err) {
    $('status').textContent = `The node does not answer: ${err.message}`;
    $('status').className = 'status offline';
  }
}

let shownRequests = '';

function renderPending(list) {
  const key = JSON.stringify(list.map((r) => r.sha256 + r.id + r.version));
  if (key === shownRequests) return; // keep buttons steady while nothing changed
  shownRequests = key;
  const ul = $('pending');
  ul.replaceChildren();
  $('pending-empty').hidden = list.length > 0;
  for (const r of list) {
    const li = element('li', undefined, { 'data-testid': `request-${r.id}` });
    li.append(element('h3', `${r.name} ${r.version}`));
    li.append(element('p', `${r.id}, bundle sha256 ${r.short_hash} — asks to:`, { class: 'muted' }));
    const asks = element('ul', undefined, { 'data-testid': 'permissions' });
    for (const line of r.permissions) asks.append(element('li', line));
    li.append(asks);
    const approve = element('button', 'Approve', { class: 'approve', type: 'button', 'data-testid': `approve-${r.id}` });
    const deny = element('button', 'Deny', { class: 'deny', type: 'button', 'data-testid': `deny-${r.id}` });
    const decide = async (decision) => {
      approve.disabled = true;
      deny.disabled = true;
      say('decision-result', decision === 'approve' ? `Installing ${r.name}…` : `Denying ${r.name}…`);
      try {
        const answer = await api('/api/pending/decide', { id: r.id, version: r.version, sha256: r.sha256, decision });
        say('decision-result', answer.message);
      } catch (err) {
        say('decision-result', err.message, true);
      }
      shownRequests = '';
      await refreshPending();
      await refreshStatus();
    };
    approve.addEventListener('click', () => decide('approve'));
    deny.addEventListener('click', () => decide('deny'));
    li.append(approve, deny);
    ul.append(li);
  }
}

async function refreshPending() {
  try {
    const { pending } = await api('/api/pending');
    renderPending(pending);
  } catch (err) {
    say('decision-result', err.message, true);
  }
}

async function refreshKeys() {
  try {
    const k = await api('/api/keys');
    $('key-store').textContent = k.store;
    const ul = $('keys');
    ul.replaceChildren();
    if (k.providers.length === 0) ul.append(element('li', 'No key is stored.', { class: 'muted' }));
    for (const provider of k.providers) {
      const li = element('li', `${provider}: a key is stored${provider === k.in_use ? ' (the provider in use)' : ''} `);
      const remove = element('button', 'Remove', { type: 'button', 'data-testid': `remove-key-${provider}` });
      remove.addEventListener('click', async () => {
        try {
          say('key-result', (await api('/api/keys/remove', { provider })).message);
        } catch (err) {
          say('key-result', err.message, true);
        }
        await refreshKeys();
      });
      li.append(remove);
      ul.append(li);
    }
  } catch (err) {
    say('key-result', err.message, true);
  }
}

async function refreshLog() {
  try {
    const log = await api('/api/log');
    $('log-tail').textContent = log.lines.join('\n');
  } catch { /* the status line says when the node is gone */ }
}

function start() {
  $('key-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('key-value');
    const provider = $('key-provider').value;
    try {
      say('key-result', (await api('/api/keys/set', { provider, key: input.value })).message);
    } catch (err) {
      say('key-result', err.message, true);
    }
    input.value = '';
    await refreshKeys();
  });
  $('pair-button').addEventListener('click', async () => {
    try {
      const p = await api('/api/pair', {});
      const svg = new DOMParser().parseFromString(p.svg, 'image/svg+xml').documentElement;
      $('qr').replaceChildren(document.importNode(svg, true));
      $('pair-link').href = p.link;
      $('pair-fingerprint').textContent = p.fingerprint;
      $('pair-expiry').textContent = `Valid for ${p.minutes} minutes, once. A new code voids this one.`;
      $('pairing').hidden = false;
    } catch (err) {
      $('pairing').hidden = false;
      $('pair-expiry').textContent = err.message;
    }
  });
  $('open-logs').addEventListener('click', async () => {
    try {
      say('logs-result', (await api('/api/logs/open', {})).message);
    } catch (err) {
      say('logs-result', err.message, true);
    }
  });
  const tick = () => Promise.all([refreshStatus(), refreshPending(), refreshLog()]);
  tick();
  refreshKeys();
  setInterval(tick, 2000);
}

start();
