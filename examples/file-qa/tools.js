// Helpers for file-qa; also available on context.tools.

/** The most text of a document the prompt carries (characters). */
export const MAX_DOCUMENT_CHARS = 60000;

/** Cuts `text` to `max` characters, at a line break where one is near, and says so. */
export function clip(text, max = MAX_DOCUMENT_CHARS) {
  if (text.length <= max) return { text, clipped: false };
  const cut = text.lastIndexOf('\n', max);
  return { text: text.slice(0, cut > max * 0.8 ? cut : max), clipped: true };
}

/** Whether the path names a PDF (its text is extracted on the desktop). */
export function isPdf(path) {
  return /\.pdf$/i.test(path);
}
