// CSV Summarizer: parses a table (pasted, or read from a file the person granted),
// computes column statistics in JS, then streams the AI's summary of them.
import { columnStats, statsMarkdown } from './tools.js';

const MAX_SAMPLE_ROWS = 20;

export async function summarize(payload, context) {
  let text = typeof payload.csv === 'string' ? payload.csv : '';
  if (!text.trim()) {
    if (!payload.path) throw new Error('Paste CSV text or give the path of a CSV file.');
    text = await context.tools.readFile(payload.path);
  }
  const table = await context.tools.parseCsv(text, {
    delimiter: payload.delimiter || ',',
    has_headers: true,
  });
  if (!table.headers || table.headers.length === 0) throw new Error('The CSV has no header row.');

  const stats = columnStats(table);
  context.emit(statsMarkdown(stats, table.rows.length));

  const sample = table.rows.slice(0, MAX_SAMPLE_ROWS);
  const prompt = [
    `A CSV table has ${table.rows.length} rows and these columns: ${table.headers.join(', ')}.`,
    `Column statistics (JSON): ${JSON.stringify(stats)}`,
    `The first ${sample.length} rows (JSON): ${JSON.stringify(sample)}`,
    payload.question
      ? `Summarise the table in a few sentences, focusing on: ${payload.question}`
      : 'Summarise what the table shows in a few sentences and point out anything notable.',
  ].join('\n');
  for await (const chunk of context.ai.generateText({
    system: 'You are a careful data analyst. Only state what the data supports.',
    prompt,
    max_tokens: 600,
  })) {
    context.emit(chunk);
  }
}
