// Validates an AsyncAPI document with the official parser (@asyncapi/parser),
// then checks every message example against its message's payload and
// headers schemas: the parser does not for AsyncAPI 3, and the examples are
// serde's JSON of real values, so this is where a schema that does not match
// what travels shows.
//
// Usage: node validate.mjs [path]   (default: docs/api/asyncapi.json)
// Exit status: 0 valid, 1 any error-level diagnostic or example mismatch, 2 usage.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const require = createRequire(import.meta.url);
const parserVersion = require('@asyncapi/parser/package.json').version;

const path = process.argv[2] ?? new URL('../../../docs/api/asyncapi.json', import.meta.url).pathname;
let text;
try {
  text = await readFile(path, 'utf8');
} catch (e) {
  console.error(`validate.mjs: cannot read ${path}: ${e.message}`);
  process.exit(2);
}

const severityName = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

const { document, diagnostics } = await new Parser().parse(text, { source: path });
for (const d of diagnostics) {
  const where = d.path?.length ? ` at ${d.path.join('.')}` : '';
  const line = d.range ? ` (line ${d.range.start.line + 1})` : '';
  console.log(`${severityName[d.severity] ?? d.severity}: ${d.code}: ${d.message}${where}${line}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (errors.length > 0 || document === undefined) {
  console.error(`${path}: ${errors.length} error(s) from @asyncapi/parser ${parserVersion}`);
  process.exit(1);
}

// `strict: false`: the parsed schemas carry the parser's own x-parser-* keys.
const ajv = new Ajv({ allErrors: true, strict: false });
addFormats(ajv);
// The integer formats schemars writes (OpenAPI's names), checked for range.
const integer = (min, max) => ({ type: 'number', validate: (n) => Number.isInteger(n) && n >= min && n <= max });
ajv.addFormat('int32', integer(-(2 ** 31), 2 ** 31 - 1));
ajv.addFormat('uint32', integer(0, 2 ** 32 - 1));
ajv.addFormat('int64', integer(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));

const mismatches = [];
let examples = 0;
for (const message of document.allMessages()) {
  const id = message.id() ?? message.name();
  message.examples().all().forEach((example, index) => {
    const parts = [
      ['payload', example.hasPayload(), example.payload(), message.payload()],
      ['headers', example.hasHeaders(), example.headers(), message.headers()],
    ];
    for (const [part, present, value, schema] of parts) {
      if (!present) continue;
      examples += 1;
      if (schema === undefined) {
        mismatches.push(`${id} example ${index}: has ${part} but the message has no ${part} schema`);
        continue;
      }
      const validate = ajv.compile(schema.json());
      if (!validate(value)) {
        mismatches.push(`${id} example ${index} ${part}: ${ajv.errorsText(validate.errors, { dataVar: part })}`);
      }
    }
  });
}
for (const m of mismatches) console.error(`error: example does not match its schema: ${m}`);
if (mismatches.length > 0) {
  console.error(`${path}: ${mismatches.length} example(s) do not match their schema`);
  process.exit(1);
}
console.log(
  `${path}: valid AsyncAPI ${document.version()} (@asyncapi/parser ${parserVersion}); ` +
    `${document.channels().length} channels, ${document.operations().length} operations, ` +
    `${document.allMessages().length} messages, ${examples} example parts match their schemas`,
);
