// File Q&A: reads a file the person granted (under $DOCUMENTS) and streams the AI's
// answer to a question about it.
import { clip, isPdf } from './tools.js';

export async function ask(payload, context) {
  const path = String(payload.path || '').trim();
  const question = String(payload.question || '').trim();
  if (!path || !question) throw new Error('Give a file and a question.');

  const raw = isPdf(path) ? await context.tools.pdfText(path) : await context.tools.readFile(path);
  if (!raw.trim()) throw new Error(`${path} has no text to read.`);
  const { text, clipped } = clip(raw);
  if (clipped) context.emit(`(Only the first ${text.length} characters of the file were read.)\n\n`);

  const prompt = [
    `Here is the content of the file ${path}:`,
    '<<<',
    text,
    '>>>',
    `Question: ${question}`,
  ].join('\n');
  for await (const chunk of context.ai.generateText({
    system: 'Answer from the file only. If it does not say, answer that it does not say.',
    prompt,
    max_tokens: 800,
  })) {
    context.emit(chunk);
  }
}
