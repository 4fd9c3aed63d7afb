/**
 * Labels a person can read in a mini-app's form.
 *
 * @rjsf names the items of a list field after the field with a dash and a number
 * ("Keywords-1", "Keywords-2"), and shows an empty label for an enum value that is
 * whitespace (a tab delimiter). These helpers give items "Keyword 1", "Keyword 2" and
 * name such values in words, unless the app's author chose titles of their own.
 */

import type { RJSFSchema, UiSchema } from '@rjsf/utils';

/** "Keywords" → "Keyword", "Addresses" → "Address", "Data" → "Data": a name for one item. */
export function singular(title: string): string {
  const t = title.trim();
  if (/(ss|us|is)$/i.test(t)) return t;
  if (/(ches|shes|sses|xes|zes)$/i.test(t)) return t.slice(0, -2);
  if (/[^aeiou]ies$/i.test(t)) return `${t.slice(0, -3)}y`;
  if (/s$/i.test(t) && t.length > 1) return t.slice(0, -1);
  return t;
}

/** The words for values that show as nothing in a select (whitespace, the empty string). */
const INVISIBLE_VALUES: Record<string, string> = {
  '\t': 'Tab',
  ' ': 'Space',
  '': '(none)',
  '\n': 'New line',
  '\r\n': 'New line (Windows)',
};

/** A property's schema, when it is an object schema (not a boolean one). */
function propertiesOf(schema: RJSFSchema): [string, RJSFSchema][] {
  return Object.entries(schema.properties ?? {}).filter(
    (entry): entry is [string, RJSFSchema] => typeof entry[1] === 'object' && entry[1] !== null,
  );
}

/**
 * The uiSchema with readable labels for the form's top-level fields: list items called
 * "<singular title> <n>" (an author's `ui:title` or an items schema with a title wins),
 * and enum values that would show as blank named in words (an author's `ui:enumNames`
 * wins).
 */
export function readableLabels(schema: RJSFSchema, uiSchema: UiSchema): UiSchema {
  if (schema.type !== 'object') return uiSchema;
  const out: UiSchema = { ...uiSchema };
  for (const [name, prop] of propertiesOf(schema)) {
    const fieldUi: UiSchema = { ...((uiSchema[name] as UiSchema | undefined) ?? {}) };
    const items = prop.items;
    if (prop.type === 'array' && items && typeof items === 'object' && !Array.isArray(items)) {
      const authorItems = fieldUi.items;
      const itemsTitled = typeof (items as RJSFSchema).title === 'string';
      const authorTitled = typeof authorItems === 'object' && authorItems !== null && 'ui:title' in authorItems;
      if (!itemsTitled && !authorTitled && typeof authorItems !== 'function') {
        const one = singular(typeof prop.title === 'string' ? prop.title : name);
        const base = (authorItems ?? {}) as UiSchema;
        fieldUi.items = (_item: unknown, index: number) => ({ ...base, 'ui:title': `${one} ${index + 1}` });
      }
    }
    if (Array.isArray(prop.enum) && !fieldUi['ui:enumNames'] && prop.enum.some((v) => typeof v === 'string' && v in INVISIBLE_VALUES)) {
      fieldUi['ui:enumNames'] = prop.enum.map((v) => (typeof v === 'string' ? (INVISIBLE_VALUES[v] ?? v) : String(v)));
    }
    if (Object.keys(fieldUi).length) out[name] = fieldUi;
  }
  return out;
}
