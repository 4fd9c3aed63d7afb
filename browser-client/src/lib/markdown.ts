/**
 * Markdown from a mini-app's output, rendered to HTML that is safe to insert.
 *
 * Two layers: `marked` renders with raw HTML turned into visible text (a model writing
 * `<img src=x onerror=…>` shows those characters; no element is made) and images shown as
 * links (no request leaves the page by itself); then DOMPurify keeps only an allow-list of
 * formatting elements and attributes, in case a renderer bug lets something through.
 */

import DOMPurify from 'dompurify';
import { Marked, type Tokens } from 'marked';

function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    /** Raw HTML (block or inline) is shown as text. */
    html(token: Tokens.HTML | Tokens.Tag): string {
      return escapeHtml(token.text);
    },
    /** An image is shown as a link to it, labelled with its alt text. */
    image(token: Tokens.Image): string {
      const label = escapeHtml(token.text || token.href);
      return `<a href="${escapeHtml(token.href)}">${label}</a>`;
    },
  },
});

/** The elements the output may contain. */
const ALLOWED_TAGS = [
  'p', 'br', 'hr', 'em', 'strong', 'del', 'code', 'pre', 'blockquote',
  'ul', 'ol', 'li', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'a',
  'table', 'thead', 'tbody', 'tr', 'th', 'td', 'input',
];
/** The attributes they may carry (`type`/`checked`/`disabled` for GFM task lists). */
const ALLOWED_ATTR = ['href', 'title', 'align', 'start', 'type', 'checked', 'disabled'];

let hooked = false;
function purify(html: string): string {
  if (!hooked) {
    hooked = true;
    DOMPurify.addHook('afterSanitizeAttributes', (node) => {
      if (node.tagName === 'A') {
        // Links open in a new tab without giving it a handle on this page.
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer nofollow');
      }
      if (node.tagName === 'INPUT' && node.getAttribute('type') !== 'checkbox') node.remove();
    });
  }
  return DOMPurify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR: [...ALLOWED_ATTR, 'target', 'rel'],
    ALLOW_DATA_ATTR: false,
  });
}

/** Renders markdown to sanitised HTML. */
export function renderMarkdown(text: string): string {
  return purify(marked.parse(text) as string);
}

/**
 * Copies `text` to the clipboard. The Clipboard API needs a secure context (https, or a
 * loopback address); elsewhere the older `execCommand('copy')` on a hidden text area is
 * tried. Resolves true when the text was copied.
 */
export async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.style.position = 'fixed';
    area.style.opacity = '0';
    document.body.append(area);
    area.select();
    try {
      return document.execCommand('copy');
    } catch {
      return false;
    } finally {
      area.remove();
    }
  }
}

/** Shows "Copied" (or why not) on `button` for a moment. */
export function flashCopied(button: HTMLButtonElement, ok: boolean, label = 'Copy'): void {
  button.textContent = ok ? 'Copied' : 'Copy failed';
  button.dataset['copied'] = ok ? 'yes' : 'no';
  window.setTimeout(() => {
    button.textContent = label;
    delete button.dataset['copied'];
  }, 2000);
}

/**
 * Puts a "Copy" button on every code block (`pre`) inside `container` (rendered
 * Markdown), which copies the block's text. The buttons are made here, not by the
 * renderer, so the sanitiser's allow-list stays as it is; calling it again on the same
 * HTML adds none twice.
 */
export function decorateCodeBlocks(container: HTMLElement | null): void {
  if (!container) return;
  for (const pre of container.querySelectorAll('pre')) {
    if (pre.parentElement?.classList.contains('code-block')) continue;
    const wrap = document.createElement('div');
    wrap.className = 'code-block';
    pre.replaceWith(wrap);
    wrap.append(pre);
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'secondary small copy-code';
    button.textContent = 'Copy';
    button.setAttribute('aria-label', 'Copy this code');
    button.addEventListener('click', () => {
      const text = (pre.querySelector('code') ?? pre).textContent ?? '';
      void copyText(text).then((ok) => flashCopied(button, ok));
    });
    wrap.append(button);
  }
}
