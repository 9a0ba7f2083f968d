// Time ranges as the pickers offer them, and the conversions between ms since the epoch (what the API speaks)
// and the value of an <input type="datetime-local"> (local wall-clock time, what people type).

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

export type RangeChoice = '1h' | '24h' | '7d' | '30d' | 'custom';

export const RANGE_LABELS: Record<RangeChoice, string> = {
  '1h': 'Last hour',
  '24h': 'Last 24 hours',
  '7d': 'Last 7 days',
  '30d': 'Last 30 days',
  custom: 'Custom range',
};

const RANGE_LENGTH: Record<Exclude<RangeChoice, 'custom'>, number> = {
  '1h': HOUR,
  '24h': DAY,
  '7d': 7 * DAY,
  '30d': 30 * DAY,
};

/** `from`/`to` (ms) of a choice; a custom one takes the two datetime-local inputs. Throws a sentence when the
 * custom inputs are not a range. Ranges are whole minutes (the current one included): the hot tier counts per
 * minute and answers only ranges on the minute, so a range off the minute would be the archive's alone and miss
 * the last minutes' events. */
export function resolveRange(choice: RangeChoice, customFrom = '', customTo = '', now = Date.now()): { from: number; to: number } {
  const end = Math.ceil((now + 1) / MINUTE) * MINUTE;
  if (choice !== 'custom') return { from: end - RANGE_LENGTH[choice], to: end };
  const from = fromLocalInput(customFrom);
  const to = customTo ? fromLocalInput(customTo) : end;
  if (from === null || to === null) throw new Error('Enter a start and an end for the custom range.');
  if (from >= to) throw new Error('The start of the range must be before its end.');
  return { from, to };
}

/** The value of a datetime-local input for a time (local time, minutes). */
export function toLocalInput(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** ms since the epoch of a datetime-local value, or null for an empty or invalid one. */
export function fromLocalInput(value: string): number | null {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? ms : null;
}

/** Start of the current UTC month (usage and allowances count calendar months in UTC). */
export function startOfUtcMonth(now = Date.now()): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}
