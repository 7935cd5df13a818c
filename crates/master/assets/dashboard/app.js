// CloudAI dashboard: a client of the master's public API, nothing more.
//   /ws/telemetry      live workers (snapshot, then events)
//   /api/cluster       header numbers, /api/tasks and /api/tasks/{id} the task table and view
//   /api/tasks/{id}/log a finished task's whole output (downloaded on request)
//   /ws/logs/{id}      a running task's output
// With TLS on, every call carries an API token (Authorization header for fetch,
// ?token= for WebSockets, which browsers cannot give headers). No framework, no
// build step; untrusted text is only ever set with textContent.
'use strict';

const HISTORY = 60;            // samples kept per sparkline
const LOG_LIMIT = 256 * 1024;  // characters of output kept in the task view
const STATES = ['queued', 'assigned', 'running', 'unknown', 'completed', 'failed', 'cancelled', 'timed_out', 'lost'];
const FINAL = new Set(['completed', 'failed', 'cancelled', 'timed_out']);

const app = {
  token: sessionStorage.getItem('cloudai-token') || '',
  socket: null,
  retries: 0,
  reconnectTimer: null,
  workers: new Map(),          // id -> {id, state, address, host, metrics, lastHeartbeat, history}
  cards: new Map(),            // id -> card elements
  selected: null,              // task id shown in the task view
  selectedState: null,
  logSocket: null,
  pendingLog: '',              // live output not drawn yet
  pendingCut: false,           // earlier pending output was dropped
  logTimer: null,
  refreshTimer: null,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---------- formatting ----------

function bytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

function ago(ms) { return ms == null ? 'never' : `${duration(Date.now() - ms)} ago`; }

// ---------- connection ----------

function setConnection(state, text) {
  const node = $('#connection');
  node.dataset.state = state;
  node.textContent = text;
}

function headers() {
  return app.token ? { Authorization: `Bearer ${app.token}` } : {};
}

class NeedsToken extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: headers(), cache: 'no-store' });
  if (response.status === 401 || response.status === 403) throw new NeedsToken(await errorText(response));
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

async function errorText(response) {
  try { return (await response.json()).error || response.statusText; } catch { return response.statusText; }
}

function socketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = app.token ? `?token=${encodeURIComponent(app.token)}` : '';
  return `${scheme}//${location.host}${path}${query}`;
}

function askForToken(message) {
  setConnection('token', 'token needed');
  $('#main').hidden = true;
  $('#token-form').hidden = false;
  $('#token-error').textContent = app.token ? message : '';
  $('#token-input').focus();
}

// Checks the API answers (and the token is good), then opens the telemetry socket.
async function connect() {
  clearTimeout(app.reconnectTimer);
  try {
    await refreshCluster();
  } catch (error) {
    if (error instanceof NeedsToken) return askForToken(error.message);
    return scheduleReconnect();
  }
  $('#token-form').hidden = true;
  $('#main').hidden = false;
  const socket = new WebSocket(socketUrl('/ws/telemetry'));
  app.socket = socket;
  socket.onopen = () => {
    app.retries = 0;
    setConnection('live', 'live');
    refreshTasks();
    if (app.selected) openTask(app.selected);
  };
  socket.onmessage = (message) => handle(JSON.parse(message.data));
  socket.onclose = () => {
    if (app.socket !== socket) return;
    app.socket = null;
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  const delay = Math.min(5000, 500 * 2 ** app.retries);
  app.retries += 1;
  setConnection('reconnecting', `reconnecting… (try ${app.retries}, next in ${(delay / 1000).toFixed(1)}s)`);
  clearTimeout(app.reconnectTimer);
  app.reconnectTimer = setTimeout(connect, delay);
}

// ---------- telemetry events ----------

function handle(message) {
  switch (message.type) {
    case 'snapshot': {
      const seen = new Set();
      for (const w of message.workers) {
        seen.add(w.worker_id);
        const worker = upsertWorker(w.worker_id);
        worker.state = w.state;
        worker.address = w.address;
        worker.host = w.host;
        worker.lastHeartbeat = w.last_heartbeat_ms_ago == null ? null : Date.now() - w.last_heartbeat_ms_ago;
        if (w.metrics) record(worker, w.metrics);
      }
      for (const id of [...app.workers.keys()]) if (!seen.has(id)) removeWorker(id);
      renderWorkers();
      break;
    }
    case 'telemetry': {
      const worker = upsertWorker(message.worker_id);
      worker.state = 'active';
      worker.lastHeartbeat = Date.now();
      record(worker, message.metrics);
      renderWorker(worker);
      break;
    }
    case 'worker_registered': {
      const worker = upsertWorker(message.worker_id);
      worker.address = message.address;
      renderWorkers();
      scheduleRefresh();
      break;
    }
    case 'worker_unregistered':
      removeWorker(message.worker_id);
      renderWorkers();
      scheduleRefresh();
      break;
    case 'worker_active':
    case 'worker_inactive': {
      const worker = upsertWorker(message.worker_id);
      worker.state = message.type === 'worker_active' ? 'active' : 'inactive';
      renderWorker(worker);
      scheduleRefresh();
      break;
    }
    case 'task_progress': {
      // A pull's progress: the task's row and, when open, its details.
      const text = message.text;
      const row = document.querySelector(`#tasks tr[data-task-id="${CSS.escape(message.task_id)}"] td.progress`);
      if (row) row.textContent = `${message.worker_id} · ${text}`;
      const field = message.task_id === app.selected ? document.querySelector('#task-details dd[data-field="pulling"]') : null;
      if (field) field.textContent = text;
      else if (message.task_id === app.selected) openTask(app.selected);
      break;
    }
    case 'task_state':
      scheduleRefresh();
      if (message.task_id === app.selected && message.state !== app.selectedState) openTask(app.selected);
      break;
    case 'lagged':
      // Missed events: ask for a fresh snapshot of everything.
      app.socket?.send(JSON.stringify({ type: 'subscribe', workers: ['*'] }));
      break;
    default:
      break;
  }
}

function upsertWorker(id) {
  let worker = app.workers.get(id);
  if (!worker) {
    worker = { id, state: 'pending', address: '', host: null, metrics: null, lastHeartbeat: null, history: { cpu: [], gpus: new Map() } };
    app.workers.set(id, worker);
  }
  return worker;
}

function removeWorker(id) {
  app.workers.delete(id);
  app.cards.get(id)?.root.remove();
  app.cards.delete(id);
}

function push(list, value) {
  list.push(value);
  if (list.length > HISTORY) list.shift();
}

function record(worker, metrics) {
  if (worker.metrics && worker.metrics.sampled_at === metrics.sampled_at) {
    worker.metrics = metrics;
    return;
  }
  worker.metrics = metrics;
  push(worker.history.cpu, metrics.cpu_percent);
  for (const gpu of metrics.gpus) {
    if (!worker.history.gpus.has(gpu.uuid)) worker.history.gpus.set(gpu.uuid, []);
    push(worker.history.gpus.get(gpu.uuid), gpu.utilization_percent);
  }
}

// ---------- worker grid ----------

function meter(name) {
  const fill = el('span');
  const bar = el('div', { class: 'bar', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-label': name }, fill);
  const num = el('span', { class: 'num' });
  const root = el('div', { class: 'meter' }, el('span', { class: 'name', text: name }), bar, num);
  return { root, bar, fill, num };
}

function setMeter(m, percent, text) {
  const p = Math.max(0, Math.min(100, percent || 0));
  m.fill.style.width = `${p.toFixed(1)}%`;
  m.bar.setAttribute('aria-valuenow', p.toFixed(0));
  m.bar.classList.toggle('high', p >= 90);
  m.num.textContent = text;
}

function sparkline(label) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', `0 0 ${HISTORY - 1} 100`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  svg.append(line);
  return svg;
}

function drawSpark(svg, values) {
  const offset = HISTORY - values.length;
  const points = values.map((v, i) => `${offset + i},${(100 - Math.max(0, Math.min(100, v))).toFixed(1)}`);
  svg.firstChild.setAttribute('points', points.join(' '));
}

function card(worker) {
  let c = app.cards.get(worker.id);
  if (c) return c;
  const cpu = meter('CPU');
  const memory = meter('Memory');
  const disk = meter('Disk');
  const spark = sparkline(`CPU history of ${worker.id}`);
  const badge = el('span', { class: 'badge' });
  const where = el('div', { class: 'where' });
  const tasks = el('span', { class: 'running' });
  const age = el('span', { class: 'age' });
  const gpus = el('div', { class: 'gpus' });
  const root = el('article', { class: 'worker', 'data-worker-id': worker.id, 'aria-label': `worker ${worker.id}` },
    el('header', {}, el('h3', { text: worker.id }), badge),
    where, cpu.root, spark, memory.root, disk.root, gpus,
    el('footer', {}, tasks, age));
  c = { root, badge, where, cpu, memory, disk, spark, gpus, gpuCards: new Map(), tasks, age };
  app.cards.set(worker.id, c);
  return c;
}

function renderWorkers() {
  const grid = $('#workers');
  const ids = [...app.workers.keys()].sort();
  for (const id of ids) {
    const c = card(app.workers.get(id));
    grid.append(c.root); // keeps the grid sorted by id
    renderWorker(app.workers.get(id));
  }
  $('#no-workers').hidden = ids.length > 0;
  countWorkers();
  const select = $('#filter-worker');
  const chosen = select.value;
  select.replaceChildren(el('option', { value: '', text: 'all' }), ...ids.map((id) => el('option', { value: id, text: id })));
  select.value = ids.includes(chosen) ? chosen : '';
}

// Worker counts in the header follow the live events, not the last API poll.
function countWorkers() {
  const count = (state) => [...app.workers.values()].filter((w) => w.state === state).length;
  for (const state of ['active', 'inactive', 'pending']) {
    document.querySelector(`[data-stat="workers-${state}"]`).textContent = count(state);
  }
}

function renderWorker(worker) {
  const c = card(worker);
  if (!c.root.isConnected) return renderWorkers();
  countWorkers();
  c.root.classList.toggle('inactive', worker.state === 'inactive');
  c.root.dataset.state = worker.state;
  c.badge.className = `badge ${worker.state}`;
  c.badge.textContent = worker.state;
  const host = worker.host;
  c.where.textContent = host ? `${host.hostname} · ${worker.address} · ${host.cpu_model || host.arch}` : worker.address;
  const m = worker.metrics;
  if (m) {
    c.root.dataset.sampledAt = String(m.sampled_at);
    setMeter(c.cpu, m.cpu_percent, `${m.cpu_percent.toFixed(1)}% of ${m.cpu_count}`);
    c.cpu.num.classList.add('cpu-value');
    setMeter(c.memory, 100 * m.memory_used_bytes / (m.memory_total_bytes || 1), `${bytes(m.memory_used_bytes)} / ${bytes(m.memory_total_bytes)}`);
    const diskKnown = m.disk_total_bytes > 0;
    c.disk.root.hidden = !diskKnown;
    if (diskKnown) setMeter(c.disk, 100 * m.disk_used_bytes / m.disk_total_bytes, `${bytes(m.disk_used_bytes)} / ${bytes(m.disk_total_bytes)}`);
    drawSpark(c.spark, worker.history.cpu);
    renderGpus(worker, c);
    c.tasks.replaceChildren();
    if (m.running_task_ids.length === 0) c.tasks.textContent = 'idle';
    for (const id of m.running_task_ids) {
      const link = el('button', { type: 'button', class: 'linkish', text: id, 'data-task-id': id });
      link.onclick = () => openTask(id);
      c.tasks.append(link, ' ');
    }
  }
  updateAge(worker, c);
}

function renderGpus(worker, c) {
  for (const gpu of worker.metrics.gpus) {
    let g = c.gpuCards.get(gpu.uuid);
    if (!g) {
      const util = meter(`GPU ${gpu.index}`);
      const memory = meter('VRAM');
      const temp = meter('Temp');
      const spark = sparkline(`GPU ${gpu.index} utilisation history`);
      const name = el('div', { class: 'gpu-name' });
      g = { util, memory, temp, spark, name, root: el('div', { class: 'gpu', 'data-gpu-uuid': gpu.uuid }, name, util.root, spark, memory.root, temp.root) };
      c.gpuCards.set(gpu.uuid, g);
      c.gpus.append(g.root);
    }
    g.name.textContent = `${gpu.index}: ${gpu.name}${gpu.task_id ? ` · held by ${gpu.task_id}` : ' · free'}`;
    setMeter(g.util, gpu.utilization_percent, `${gpu.utilization_percent.toFixed(0)}%`);
    setMeter(g.memory, 100 * gpu.memory_used_bytes / (gpu.memory_total_bytes || 1), `${bytes(gpu.memory_used_bytes)} / ${bytes(gpu.memory_total_bytes)}`);
    setMeter(g.temp, gpu.temperature_celsius, `${gpu.temperature_celsius.toFixed(0)} °C`);
    drawSpark(g.spark, worker.history.gpus.get(gpu.uuid) || []);
  }
}

function updateAge(worker, c) {
  if (worker.state === 'inactive') {
    c.age.textContent = worker.lastHeartbeat == null ? 'silent since the master started' : `silent for ${duration(Date.now() - worker.lastHeartbeat)}`;
  } else if (worker.state === 'pending') {
    c.age.textContent = 'not heard from yet';
  } else {
    c.age.textContent = `heartbeat ${ago(worker.lastHeartbeat)}`;
  }
}

// ---------- header and task table ----------

async function refreshCluster() {
  const cluster = await api('/api/cluster');
  const set = (name, text) => { document.querySelector(`[data-stat="${name}"]`).textContent = text; };
  if (!app.socket) {
    // Before the telemetry snapshot arrives; afterwards the live map counts.
    set('workers-active', cluster.workers.active);
    set('workers-inactive', cluster.workers.inactive);
    set('workers-pending', cluster.workers.pending);
  }
  const counts = STATES.filter((s) => cluster.tasks[s] > 0).map((s) => `${cluster.tasks[s]} ${s}`);
  set('tasks', counts.length ? counts.join(' · ') : 'none yet');
  set('queue', cluster.queue_depth);
  set('uptime', duration(cluster.uptime_seconds * 1000));
  const store = document.querySelector('[data-stat="store"]');
  store.textContent = cluster.store_healthy ? 'healthy' : `unreachable: ${cluster.store_error}`;
  store.className = `value ${cluster.store_healthy ? 'good' : 'bad'}`;
  store.title = cluster.store;
}

// History is paged newest first: `taskPages` holds the cursor of every page
// shown after the first (Older pushes one, Newer pops one).
const taskPages = [];
let olderTasks = null;

async function refreshTasks() {
  const params = new URLSearchParams({ limit: '200' });
  if ($('#filter-state').value) params.set('state', $('#filter-state').value);
  if ($('#filter-worker').value) params.set('worker', $('#filter-worker').value);
  if (taskPages.length) params.set('cursor', taskPages[taskPages.length - 1]);
  let answer;
  try { answer = await api(`/api/tasks?${params}`); } catch { return; }
  const body = $('#tasks tbody');
  body.replaceChildren(...answer.tasks.map(taskRow));
  $('#no-tasks').hidden = answer.tasks.length > 0;
  olderTasks = answer.next_cursor;
  $('#tasks-older').disabled = !olderTasks;
  $('#tasks-newer').disabled = taskPages.length === 0;
  const page = taskPages.length ? `page ${taskPages.length + 1}: ` : 'latest ';
  $('#tasks-count').textContent = `${page}${answer.tasks.length} task${answer.tasks.length === 1 ? '' : 's'}`;
}

function firstTaskPage() {
  taskPages.length = 0;
  refreshTasks();
}

function taskRow(task) {
  const ran = task.started_at ? duration((task.finished_at || Date.now()) - task.started_at) : '';
  const row = el('tr', { 'data-task-id': task.id, 'data-state': task.state, tabindex: '0', 'aria-label': `task ${task.id}, ${task.state}` },
    el('td', { class: 'mono', text: task.id }),
    el('td', {}, el('span', { class: `badge ${task.state}`, text: task.state })),
    el('td', { class: 'progress', text: task.progress ? `${task.worker_id} · ${task.progress.text}` : task.worker_id || (task.waiting_reason ? `waiting: ${task.waiting_reason}` : '') }),
    el('td', { class: 'cmd mono', text: [task.image, ...task.command].join(' '), title: [task.image, ...task.command].join(' ') }),
    el('td', { text: ago(task.created_at) }),
    el('td', { text: ran }),
    el('td', { text: task.exit_code == null ? '' : String(task.exit_code) }));
  row.classList.toggle('selected', task.id === app.selected);
  row.onclick = () => openTask(task.id);
  row.onkeydown = (event) => { if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); openTask(task.id); } };
  return row;
}

// Task events come in bursts: refresh the header and table at most twice a second.
function scheduleRefresh() {
  if (app.refreshTimer) return;
  app.refreshTimer = setTimeout(() => {
    app.refreshTimer = null;
    refreshCluster().catch(() => {});
    refreshTasks();
  }, 500);
}

// ---------- task view ----------

function closeLogSocket() {
  forgetPendingLog();
  if (app.logSocket) {
    app.logSocket.onclose = null;
    app.logSocket.close();
    app.logSocket = null;
  }
}

// Live output comes in many small messages: they are gathered and drawn at
// most ten times a second, so a task that writes fast never freezes the page.
function appendLog(text) {
  app.pendingLog += text;
  if (app.pendingLog.length > LOG_LIMIT) {
    app.pendingLog = app.pendingLog.slice(-LOG_LIMIT);
    app.pendingCut = true;
  }
  if (!app.logTimer) app.logTimer = setTimeout(drawLog, 100);
}

function drawLog() {
  app.logTimer = null;
  const pre = $('#task-log');
  const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  let all = pre.textContent + app.pendingLog;
  if (app.pendingCut || all.length > LOG_LIMIT) all = `[earlier output not shown]\n${all.slice(-LOG_LIMIT)}`;
  app.pendingLog = '';
  app.pendingCut = false;
  pre.textContent = all;
  if (follow) pre.scrollTop = pre.scrollHeight;
}

function forgetPendingLog() {
  clearTimeout(app.logTimer);
  app.logTimer = null;
  app.pendingLog = '';
  app.pendingCut = false;
}

function renderDetails(task) {
  app.selectedState = task.state;
  const rows = [
    ['State', task.state + (task.error ? ` (${task.error})` : '') + (task.oom_killed ? ' · out of memory' : '')],
    ['Worker', task.worker_id || '–'],
    ['Image', task.image],
    ['Command', task.command.join(' ') || '(image default)'],
    ['Attempt', `${task.attempt} of ${task.max_retries + 1}`],
    ['Priority', String(task.priority)],
    ['GPUs', task.assigned_gpus.join(', ') || '–'],
    ['Submitted', new Date(task.created_at).toLocaleString()],
    ['Exit code', task.exit_code == null ? '–' : String(task.exit_code)],
  ];
  const options = task.options || {};
  const container = [
    options.shm_size_bytes ? `shm ${bytes(options.shm_size_bytes)}` : null,
    options.user ? `user ${options.user}` : null,
    options.workdir ? `workdir ${options.workdir}` : null,
  ].filter(Boolean);
  if (container.length) rows.push(['Container', container.join(' · ')]);
  const mounts = (options.mounts || []).map((m) => {
    const from = m.kind === 'tmpfs' ? 'tmpfs' : m.kind === 'host_path' ? `host ${m.source}` : m.source;
    return `${from} → ${m.target}${m.read_only ? ' (read-only)' : ''}`;
  });
  if (mounts.length) rows.push(['Mounts', mounts.join(', ')]);
  if (task.waiting_reason) rows.push(['Waiting', task.waiting_reason]);
  if (task.progress) rows.push(['Pulling', task.progress.text]);
  $('#task-details').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v, 'data-field': k.toLowerCase() })]));
  $('#task-view').dataset.state = task.state;
}

// A finished task's stored tail; when earlier output was cut, from its first whole line.
function storedTail(answer) {
  const log = answer.log || '';
  if (!answer.log_truncated) return log;
  const newline = log.indexOf('\n');
  const whole = newline >= 0 && newline < 4096 ? log.slice(newline + 1) : log;
  const note = answer.full_log ? '[earlier output: “Download the whole output” above]' : '[earlier output cut off]';
  return `${note}\n${whole}`;
}

async function openTask(id) {
  closeLogSocket();
  app.selected = id;
  for (const row of document.querySelectorAll('#tasks tbody tr')) row.classList.toggle('selected', row.dataset.taskId === id);
  $('#task-view').hidden = false;
  $('#task-view-id').textContent = id;
  $('#task-log').textContent = '';
  $('#task-log-status').textContent = '';
  $('#task-log-download').hidden = true;
  let answer;
  try { answer = await api(`/api/tasks/${encodeURIComponent(id)}`); } catch (error) {
    $('#task-log-status').textContent = `(${error.message})`;
    return;
  }
  if (app.selected !== id) return;
  renderDetails(answer.task);
  if (FINAL.has(answer.task.state)) {
    $('#task-log-status').textContent = answer.log == null ? '(none stored)'
      : answer.full_log ? `(stored: the last ${bytes(new TextEncoder().encode(answer.log).length)} of ${bytes(answer.log_bytes)})` : '(stored)';
    $('#task-log-download').hidden = !answer.full_log;
    $('#task-log').textContent = storedTail(answer);
    return;
  }
  if (answer.task.state !== 'assigned' && answer.task.state !== 'running') {
    $('#task-log-status').textContent = '(no output yet)';
    return;
  }
  $('#task-log-status').textContent = '(live)';
  const socket = new WebSocket(socketUrl(`/ws/logs/${encodeURIComponent(id)}`));
  app.logSocket = socket;
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === 'log') appendLog(event.data);
    if (event.type === 'end' || event.type === 'waiting') {
      renderDetails(event.task);
      $('#task-log-status').textContent = event.type === 'end' ? `(ended: ${event.task.state})` : '(no output yet)';
    }
  };
  socket.onclose = () => {
    if (app.logSocket === socket) app.logSocket = null;
    if ($('#task-log-status').textContent === '(live)') $('#task-log-status').textContent = '(connection lost)';
  };
}

// The whole stored output, fetched with the token and saved as a file.
async function downloadLog() {
  const id = app.selected;
  if (!id) return;
  const button = $('#task-log-download');
  button.disabled = true;
  try {
    const response = await fetch(`/api/tasks/${encodeURIComponent(id)}/log`, { headers: headers(), cache: 'no-store' });
    if (!response.ok) throw new Error(await errorText(response));
    const url = URL.createObjectURL(await response.blob());
    const link = el('a', { href: url, download: `${id}.log` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    $('#task-log-status').textContent = `(download failed: ${error.message})`;
  } finally {
    button.disabled = false;
  }
}

// ---------- start ----------

function start() {
  $('#token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    app.token = $('#token-input').value.trim();
    sessionStorage.setItem('cloudai-token', app.token);
    $('#token-input').value = '';
    setConnection('connecting', 'connecting…');
    connect();
  });
  $('#filter-state').addEventListener('change', firstTaskPage);
  $('#filter-worker').addEventListener('change', firstTaskPage);
  $('#tasks-older').addEventListener('click', () => { if (olderTasks) { taskPages.push(olderTasks); refreshTasks(); } });
  $('#tasks-newer').addEventListener('click', () => { taskPages.pop(); refreshTasks(); });
  $('#task-log-download').addEventListener('click', downloadLog);
  $('#task-view-close').addEventListener('click', () => {
    closeLogSocket();
    app.selected = null;
    $('#task-view').hidden = true;
    for (const row of document.querySelectorAll('#tasks tbody tr.selected')) row.classList.remove('selected');
  });
  // Ages and "silent for" move every second; the header's uptime every 5 s.
  setInterval(() => { for (const worker of app.workers.values()) { const c = app.cards.get(worker.id); if (c) updateAge(worker, c); } }, 1000);
  setInterval(() => { if (app.socket) refreshCluster().catch(() => {}); }, 5000);
  connect();
}

start();
