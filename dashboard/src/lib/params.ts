// Params typed as `key=value` lines (one per line), the way people paste them, to and from the API's objects.

/** Parses `key=value` lines (blank lines skipped); throws a sentence naming the first bad line. */
export function parseParams(text: string): Record<string, string> {
  const params: Record<string, string> = {};
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`Line ${i + 1} is not key=value: “${line.trim()}”.`);
    const key = line.slice(0, eq).trim();
    if (key in params) throw new Error(`The param “${key}” is given twice.`);
    params[key] = line.slice(eq + 1).trim();
  });
  return params;
}

export function formatParams(params: Record<string, string> | null | undefined): string {
  return Object.entries(params ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join('\n');
}

/** A comma-separated list as an array (trimmed, empty entries dropped). */
export function parseList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
