// Column statistics for a parsed table; also available as context.tools.columnStats.

function isNumber(text) {
  return text !== '' && Number.isFinite(Number(text));
}

function round(n) {
  return Math.round(n * 1000) / 1000;
}

/**
 * Statistics per column of `{headers, rows}` (rows are arrays of strings, or objects
 * keyed by header): non-empty count, empty count, and for numeric columns min, max,
 * mean and sum, otherwise the number of distinct values and the most frequent ones.
 */
export function columnStats(table) {
  const rows = (table.rows || []).map((row) =>
    Array.isArray(row) ? row : table.headers.map((h) => row[h]),
  );
  return table.headers.map((name, i) => {
    const values = rows.map((row) => (row[i] === undefined || row[i] === null ? '' : String(row[i]).trim()));
    const present = values.filter((v) => v !== '');
    const stats = { name, count: present.length, empty: values.length - present.length };
    if (present.length > 0 && present.every(isNumber)) {
      const nums = present.map(Number);
      const sum = nums.reduce((a, b) => a + b, 0);
      Object.assign(stats, {
        kind: 'number',
        min: Math.min(...nums),
        max: Math.max(...nums),
        mean: round(sum / nums.length),
        sum: round(sum),
      });
    } else {
      const counts = new Map();
      for (const v of present) counts.set(v, (counts.get(v) || 0) + 1);
      const top = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 3);
      Object.assign(stats, { kind: 'text', distinct: counts.size, top: top.map(([value, n]) => `${value} (${n})`) });
    }
    return stats;
  });
}

/** The statistics as a Markdown table. */
export function statsMarkdown(stats, rowCount) {
  const lines = [
    `**${rowCount} rows, ${stats.length} columns**`,
    '',
    '| column | values | empty | summary |',
    '| --- | --- | --- | --- |',
  ];
  for (const s of stats) {
    const summary =
      s.kind === 'number'
        ? `min ${s.min}, max ${s.max}, mean ${s.mean}, sum ${s.sum}`
        : `${s.distinct} distinct; most common: ${s.top.join(', ') || '—'}`;
    lines.push(`| ${s.name} | ${s.count} | ${s.empty} | ${summary} |`);
  }
  return lines.join('\n') + '\n\n';
}
