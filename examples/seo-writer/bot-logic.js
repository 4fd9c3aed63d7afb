// SEO Writer: one action, `write`, that streams an article as the model writes it.
import { articlePrompt, cleanKeywords } from './tools.js';

const TONES = ['neutral', 'friendly', 'professional', 'playful'];

export async function write(payload, context) {
  const topic = String(payload.topic || '').trim();
  if (!topic) throw new Error('Please give a topic.');
  const tone = TONES.includes(payload.tone) ? payload.tone : 'neutral';
  const words = Math.min(2000, Math.max(200, Number(payload.words) || 800));
  const keywords = cleanKeywords(payload.keywords);
  context.console.info(`seo-writer: ${topic} (${keywords.length} keywords, ${tone})`);

  const generation = context.ai.generateText({
    system: 'You are an experienced SEO copywriter. You write accurate, useful articles.',
    prompt: articlePrompt({ topic, keywords, tone, words }),
    max_tokens: Math.ceil(words * 2),
  });
  for await (const chunk of generation) {
    context.emit(chunk);
  }
}
