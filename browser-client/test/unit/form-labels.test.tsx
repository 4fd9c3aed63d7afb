// @vitest-environment jsdom
/**
 * Readable labels in a mini-app's form: list items named "Keyword 1" rather than
 * @rjsf's "Keywords-1", and a tab delimiter named in words rather than a blank option.
 */

import { act, cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import type { RJSFSchema, UiSchema } from '@rjsf/utils';
import { MiniAppRunner, type RunFn } from '../../src/components/MiniAppRunner';
import { readableLabels, singular } from '../../src/lib/formLabels';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
afterEach(cleanup);

const schema: RJSFSchema = {
  type: 'object',
  properties: {
    topic: { type: 'string', title: 'Topic' },
    keywords: { type: 'array', title: 'Keywords', items: { type: 'string' } },
    delimiter: { type: 'string', title: 'Delimiter', enum: [',', '\t', ';'] },
  },
  required: ['topic'],
};

describe('readable form labels', () => {
  it('names one item of a list', () => {
    expect(singular('Keywords')).toBe('Keyword');
    expect(singular('Addresses')).toBe('Address');
    expect(singular('Categories')).toBe('Category');
    expect(singular('Status')).toBe('Status');
    expect(singular('Data')).toBe('Data');
  });

  it('titles list items by number and names invisible enum values', () => {
    const ui = readableLabels(schema, {});
    const items = (ui.keywords as UiSchema).items as (item: unknown, index: number) => UiSchema;
    expect(items('x', 0)['ui:title']).toBe('Keyword 1');
    expect(items('y', 1)['ui:title']).toBe('Keyword 2');
    expect((ui.delimiter as UiSchema)['ui:enumNames']).toEqual([',', 'Tab', ';']);
    expect(ui.topic).toBeUndefined();
  });

  it('keeps what the author chose', () => {
    const authored: UiSchema = {
      keywords: { items: { 'ui:title': 'Tag', 'ui:placeholder': 'e.g. quic' } },
      delimiter: { 'ui:enumNames': ['Comma', 'Tab key', 'Semicolon'] },
    };
    const ui = readableLabels(schema, authored);
    expect((ui.keywords as UiSchema).items).toEqual({ 'ui:title': 'Tag', 'ui:placeholder': 'e.g. quic' });
    expect((ui.delimiter as UiSchema)['ui:enumNames']).toEqual(['Comma', 'Tab key', 'Semicolon']);
    const titledItems: RJSFSchema = {
      type: 'object',
      properties: { k: { type: 'array', title: 'Keywords', items: { type: 'string', title: 'Word' } } },
    };
    expect(readableLabels(titledItems, {}).k).toBeUndefined();
    // An author's item uiSchema without a title keeps its options and gains the title.
    const placeholder = readableLabels(schema, { keywords: { items: { 'ui:placeholder': 'e.g. quic' } } });
    const fn = (placeholder.keywords as UiSchema).items as (item: unknown, index: number) => UiSchema;
    expect(fn('', 2)).toEqual({ 'ui:placeholder': 'e.g. quic', 'ui:title': 'Keyword 3' });
  });

  it('shows the readable labels in the rendered form', async () => {
    const run: RunFn = () => new Promise(() => {});
    const { container } = render(<MiniAppRunner actions={{ seo: schema }} deviceName="laptop" run={run} />);
    // Two keywords, added through the form's own button.
    for (let i = 0; i < 2; i++) {
      const add = screen.getAllByRole('button').find((b) => /add/i.test(b.textContent ?? ''));
      expect(add, 'the list has an add button').toBeDefined();
      await act(async () => fireEvent.click(add!));
    }
    const text = container.textContent ?? '';
    expect(text).toContain('Keyword 1');
    expect(text).toContain('Keyword 2');
    expect(text).not.toContain('Keywords-1');
    const options = [...container.querySelectorAll('option')].map((o) => o.textContent);
    expect(options).toContain('Tab');
    expect(options).not.toContain('\t');
  });
});
