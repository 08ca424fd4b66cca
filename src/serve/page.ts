// The page `residual serve` shows at GET /: pick or drop an image, see the top-5 classes with bars.
// Self-contained (inline CSS and script, no external resources), so the server's Content-Security-Policy
// can forbid everything else. Labels are set with textContent, never as HTML.

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** The Content-Security-Policy the page is served with: only its own inline code, blob: previews and fetches to the server. */
export const PAGE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; " +
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function pageHtml(info: { model: string; dtype: string; input: readonly number[]; classes: number; top: number }): string {
  const title = `Residual: ${escapeHtml(info.model)}`;
  const subtitle = escapeHtml(`${info.model} · ${info.dtype} · input ${info.input.join('x')} · ${info.classes} classes`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${title}</title>
<style>
  :root { --fg: #1d2330; --muted: #5d6675; --line: #d8dde6; --accent: #2f6fde; --bg: #f6f7f9; --card: #fff; --bad: #b42318; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
  main { max-width: 760px; margin: 32px auto; padding: 0 16px; }
  h1 { font-size: 22px; margin: 0 0 2px; }
  .sub { color: var(--muted); margin: 0 0 20px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px; }
  #drop { display: flex; gap: 18px; align-items: center; border: 2px dashed var(--line); border-radius: 10px; padding: 18px;
          cursor: pointer; transition: border-color .15s, background .15s; }
  #drop.over { border-color: var(--accent); background: #eef3fd; }
  #drop:focus-within { border-color: var(--accent); }
  #preview { width: 128px; height: 128px; object-fit: cover; border-radius: 8px; background: #e9ecf1; flex: none; }
  #preview:not([src]) { visibility: hidden; }
  .hint strong { color: var(--accent); }
  .hint small { color: var(--muted); display: block; margin-top: 4px; }
  input[type=file] { position: absolute; width: 1px; height: 1px; opacity: 0; }
  #status { min-height: 1.5em; margin: 14px 2px 8px; color: var(--muted); }
  #status.error { color: var(--bad); }
  #results { list-style: none; margin: 0; padding: 0; }
  #results li { display: grid; grid-template-columns: minmax(120px, 240px) 1fr 64px; gap: 12px; align-items: center; padding: 7px 2px;
                border-top: 1px solid var(--line); }
  #results li:first-child { border-top: 0; font-weight: 600; }
  .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar { height: 12px; background: #e9ecf1; border-radius: 6px; overflow: hidden; }
  .bar span { display: block; height: 100%; background: var(--accent); border-radius: 6px; min-width: 2px; }
  .pct { text-align: right; font-variant-numeric: tabular-nums; }
  footer { color: var(--muted); font-size: 13px; margin-top: 14px; }
  code { background: #eceff4; padding: 1px 5px; border-radius: 4px; }
</style>
</head>
<body>
<main>
  <h1>${title}</h1>
  <p class="sub">${subtitle}</p>
  <div class="card">
    <label id="drop" for="file">
      <img id="preview" alt="">
      <span class="hint"><strong>Choose an image</strong> or drop one here
        <small>JPEG, PNG, WebP, GIF, TIFF, AVIF or SVG; it is sent to this server only</small></span>
      <input id="file" type="file" accept="image/*">
    </label>
    <div id="status" role="status" aria-live="polite"></div>
    <ol id="results" aria-label="top classes"></ol>
  </div>
  <footer>API: <code id="api">curl --data-binary @photo.jpg 'http://host/predict?top=${info.top}'</code> · <code>GET /health</code></footer>
</main>
<script>
(() => {
  const TOP = ${JSON.stringify(info.top)};
  const drop = document.getElementById('drop'), input = document.getElementById('file');
  const preview = document.getElementById('preview'), status = document.getElementById('status'), list = document.getElementById('results');
  let shown = null, seq = 0;
  document.getElementById('api').textContent = "curl --data-binary @photo.jpg '" + new URL('predict?top=' + TOP, location.href).href + "'";
  const say = (text, error) => { status.textContent = text; status.className = error ? 'error' : ''; };

  async function classify(file) {
    if (!file) return;
    const mine = ++seq;
    if (shown) URL.revokeObjectURL(shown);
    shown = URL.createObjectURL(file);
    preview.src = shown;
    list.replaceChildren();
    say('Classifying ' + file.name + '…');
    try {
      const res = await fetch('predict?top=' + TOP, { method: 'POST', body: file, headers: { 'Content-Type': file.type || 'application/octet-stream' } });
      const body = await res.json().catch(() => ({ error: 'the server answered ' + res.status + ' without JSON' }));
      if (mine !== seq) return;
      if (!res.ok) { say(body.error || ('error ' + res.status), true); return; }
      for (const t of body.top) {
        const li = document.createElement('li');
        const label = document.createElement('span'); label.className = 'label'; label.textContent = t.label; label.title = t.label + ' (class ' + t.class + ')';
        const bar = document.createElement('span'); bar.className = 'bar';
        const fill = document.createElement('span'); fill.style.width = (100 * t.probability).toFixed(2) + '%'; bar.append(fill);
        const pct = document.createElement('span'); pct.className = 'pct'; pct.textContent = (100 * t.probability).toFixed(1) + '%';
        li.append(label, bar, pct);
        list.append(li);
      }
      say(file.name + ': ' + body.ms.toFixed(1) + ' ms on the server');
    } catch (e) {
      if (mine === seq) say('The request failed: ' + e.message, true);
    }
  }

  input.addEventListener('change', () => { classify(input.files[0]); input.value = ''; });
  for (const ev of ['dragenter', 'dragover']) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('over'); });
  for (const ev of ['dragleave', 'drop']) drop.addEventListener(ev, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); classify(e.dataTransfer.files[0]); });
  document.addEventListener('paste', (e) => { const f = [...e.clipboardData.files][0]; if (f) classify(f); });
})();
</script>
</body>
</html>
`;
}
