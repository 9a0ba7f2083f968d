// CSV export of a table, made in the browser (no server round trip) as RFC 4180: comma-separated, CRLF line
// ends, and a field quoted when it holds a comma, a quote, a line break or leading/trailing spaces.

export type Cell = string | number | boolean | null | undefined;

export function csvField(value: Cell): string {
  if (value === null || value === undefined) return '';
  let text = String(value);
  // a spreadsheet runs a text field that starts with = + - @ as a formula: a leading ' keeps it text (OWASP's
  // advice against CSV injection); numbers are not strings here, so a negative count stays a number
  if (typeof value === 'string' && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(header: string[], rows: Cell[][]): string {
  return [header, ...rows].map((row) => row.map(csvField).join(',')).join('\r\n') + '\r\n';
}

/** Saves text as a file through a temporary object URL (allowed by the page's CSP, unlike a data: link). */
export function downloadCsv(fileName: string, csv: string): void {
  const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = fileName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
