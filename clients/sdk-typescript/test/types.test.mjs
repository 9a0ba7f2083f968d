// The package's public types: test/types/legacy-track.ts compiles against dist/index.d.ts with the package's strict
// settings (the replaced SDK's `track()` calls among them), and its `@ts-expect-error` lines still are errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';

test("the replaced SDK's client calls compile under strict mode, and wrong events do not", () => {
  const config = fileURLToPath(new URL('types/tsconfig.json', import.meta.url));
  const host = {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => assert.fail(ts.flattenDiagnosticMessageText(d.messageText, '\n')),
  };
  const parsed = ts.getParsedCommandLineOfConfigFile(config, {}, host);
  assert.equal(parsed.options.strict, true);
  assert.equal(parsed.options.exactOptionalPropertyTypes, true);
  assert.deepEqual(parsed.fileNames.map((f) => f.split('/').pop()), ['legacy-track.ts']);
  const program = ts.createProgram(parsed.fileNames, parsed.options);
  const formatHost = {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => process.cwd(),
    getNewLine: () => '\n',
  };
  const errors = ts.getPreEmitDiagnostics(program).map((d) => ts.formatDiagnostic(d, formatHost).trim());
  assert.deepEqual(errors, []);
});
