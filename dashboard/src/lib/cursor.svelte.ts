// The cursors of the pages seen so far, for Previous/Next over the API's cursor paging (which only goes forward).

export class CursorPages {
  /** cursors[i] is what fetches page i+1; the first page has none */
  cursors = $state<(string | undefined)[]>([undefined]);

  get page(): number {
    return this.cursors.length;
  }

  get current(): string | undefined {
    return this.cursors[this.cursors.length - 1];
  }

  next(cursor: string | null): void {
    if (cursor) this.cursors = [...this.cursors, cursor];
  }

  previous(): void {
    if (this.cursors.length > 1) this.cursors = this.cursors.slice(0, -1);
  }

  reset(): void {
    this.cursors = [undefined];
  }
}
