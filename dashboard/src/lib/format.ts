// Numbers, dates and sizes for people, in the browser's locale (Intl). Formatters are built once: creating an
// Intl formatter costs far more than using one, and tables call these thousands of times.

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const percent = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dateTimeSeconds = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const shortDateTimeSeconds = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
  hour: 'numeric',
  minute: '2-digit',
  second: '2-digit',
});
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });
const monthUtc = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'long', timeZone: 'UTC' });
const dayUtc = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeZone: 'UTC' });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

export const fmtInt = (n: number | null | undefined): string => (n == null ? '–' : integer.format(n));
export const fmtCompact = (n: number): string => compact.format(n);
export const fmtPercent = (share: number): string => percent.format(share);

export const fmtDateTime = (ms: number | null | undefined): string => (ms == null ? '–' : dateTime.format(ms));
export const fmtDateTimeSeconds = (ms: number): string => dateTimeSeconds.format(ms);
/** "Dec 6, 10:38:39 PM": for tables of recent events, where the year is noise. */
export const fmtShortDateTimeSeconds = (ms: number): string => shortDateTimeSeconds.format(ms);
export const fmtDate = (ms: number): string => dateOnly.format(ms);
export const fmtTime = (ms: number): string => timeOnly.format(ms);

/** A usage period's start, as the API counts it (UTC hours, days and calendar months). */
export function fmtPeriod(ms: number, granularity: 'hour' | 'day' | 'month'): string {
  if (granularity === 'month') return monthUtc.format(ms);
  if (granularity === 'day') return dayUtc.format(ms);
  return dateTime.format(ms);
}

/** "3 minutes ago", "in 2 days". */
export function fmtRelative(ms: number, now = Date.now()): string {
  const seconds = Math.round((ms - now) / 1000);
  const steps: [Intl.RelativeTimeFormatUnit, number][] = [
    ['second', 60],
    ['minute', 60],
    ['hour', 24],
    ['day', 30],
    ['month', 12],
  ];
  let value = seconds;
  for (const [unit, size] of steps) {
    if (Math.abs(value) < size) return relative.format(value, unit);
    value = Math.round(value / size);
  }
  return relative.format(value, 'year');
}

/** A duration in ms as "850 ms", "12.5 s", "3 min", "2.1 h", "4.2 d". */
export function fmtDuration(ms: number): string {
  const abs = Math.abs(ms);
  const one = (n: number) => (n < 10 ? n.toFixed(1) : Math.round(n).toString());
  if (abs < 1000) return `${Math.round(ms)} ms`;
  if (abs < 60_000) return `${one(ms / 1000)} s`;
  if (abs < 3_600_000) return `${one(ms / 60_000)} min`;
  if (abs < 86_400_000) return `${one(ms / 3_600_000)} h`;
  return `${one(ms / 86_400_000)} d`;
}

const BYTE_UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

export function fmtBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${BYTE_UNITS[unit]}`;
}

/** An amount in cents of a currency ("usd"). */
export function fmtMoney(cents: number, currency: string): string {
  return new Intl.NumberFormat(undefined, { style: 'currency', currency: currency.toUpperCase() }).format(cents / 100);
}
