// @vitest-environment jsdom
/** Markdown from a mini-app is rendered, and HTML in it never becomes markup. */

import { describe, expect, it } from 'vitest';
import { renderMarkdown } from '../../src/lib/markdown';

function render(md: string): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = renderMarkdown(md);
  return div;
}

describe('renderMarkdown', () => {
  it('renders ordinary markdown', () => {
    const el = render('# Title\n\nSome **bold** and `code`.\n\n- one\n- two\n\n[a link](https://example.com)');
    expect(el.querySelector('h1')?.textContent).toBe('Title');
    expect(el.querySelector('strong')?.textContent).toBe('bold');
    expect(el.querySelector('code')?.textContent).toBe('code');
    expect(el.querySelectorAll('li')).toHaveLength(2);
    const a = el.querySelector('a')!;
    expect(a.getAttribute('href')).toBe('https://example.com');
    expect(a.getAttribute('rel')).toContain('noopener');
  });

  it('shows <img src=x onerror=…> as text, never as an element', () => {
    for (const md of ['<img src=x onerror=alert(1)>', 'Echo: about <img src=x onerror=alert(1)>.', '<div>\n<img src=x onerror=alert(1)>\n</div>']) {
      const el = render(md);
      expect(el.querySelector('img')).toBeNull();
      expect(el.querySelector('[onerror]')).toBeNull();
      expect(el.textContent).toContain('<img src=x onerror=alert(1)>');
    }
  });

  it('drops scripts, javascript: links and event handlers', () => {
    const el = render('<script>alert(1)</script>\n\n[click](javascript:alert(1)) <a href="x" onclick="alert(1)">y</a>');
    expect(el.querySelector('script')).toBeNull();
    expect(el.innerHTML).not.toMatch(/href="javascript:/i);
    expect(el.querySelector('[onclick]')).toBeNull();
    expect(el.textContent).toContain('<script>alert(1)</script>');
  });

  it('turns a markdown image into a link, so nothing loads by itself', () => {
    const el = render('![a cat](https://example.com/cat.png)');
    expect(el.querySelector('img')).toBeNull();
    const a = el.querySelector('a')!;
    expect(a.textContent).toBe('a cat');
    expect(a.getAttribute('href')).toBe('https://example.com/cat.png');
  });
});
