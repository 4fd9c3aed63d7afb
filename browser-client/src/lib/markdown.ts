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
