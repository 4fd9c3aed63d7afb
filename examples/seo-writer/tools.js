// Helpers for bot-logic.js; they also appear on context.tools.

/** Keywords as a clean list: trimmed, no empties, no duplicates (case-insensitive). */
export function cleanKeywords(keywords) {
  const seen = new Set();
  const out = [];
  for (const raw of Array.isArray(keywords) ? keywords : []) {
    const word = String(raw).trim();
    if (word && !seen.has(word.toLowerCase())) {
      seen.add(word.toLowerCase());
      out.push(word);
    }
  }
  return out;
}

/** The prompt for one article. */
export function articlePrompt({ topic, keywords, tone, words }) {
  const lines = [
    `Write an SEO article about "${topic}" of about ${words} words, in a ${tone} tone.`,
    'Format: Markdown. Start with a title (# …) under 60 characters, then a line',
    '"Meta description: …" under 155 characters, then sections with ## headings,',
    'and end with a short conclusion.',
  ];
  if (keywords.length > 0) {
    lines.push(`Use these keywords naturally, each at least once: ${keywords.join(', ')}.`);
  }
  return lines.join('\n');
}
