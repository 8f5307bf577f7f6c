// Validates KEDA ScaledObjects against KEDA's own API schema, as shipped by
// @kubernetes-models/keda (generated from github.com/kedacore/keda/v2/apis/keda/v1alpha1):
//  1. the package's JSON-schema validator: types, required fields, int32 formats;
//  2. the package's TypeScript types with the compiler's excess-property check, because the
//     schema validator (like the CRD's structural schema) ignores unknown fields, while the
//     API server with strict field validation (kubectl apply --validate=strict) rejects them.
// Usage: node validate_keda.mjs OBJECTS.json   (a JSON array of ScaledObjects)
// Run from a directory whose node_modules holds the packages of tests/tools/package.json.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

// The packages live in the caller's directory (a cache), not next to this script.
const modules = path.join(process.cwd(), "node_modules");
const { ScaledObject } = await import(
  pathToFileURL(path.join(modules, "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js")).href
);
const ts = createRequire(path.join(process.cwd(), "package.json"))("typescript");

const objects = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let failures = 0;

objects.forEach((obj, i) => {
  const name = `ScaledObject/${obj?.metadata?.name ?? "#" + i}`;
  if (obj.apiVersion !== "keda.sh/v1alpha1" || obj.kind !== "ScaledObject") {
    console.log(`ERROR ${name}: not a keda.sh/v1alpha1 ScaledObject`);
    failures++;
    return;
  }
  try {
    new ScaledObject(obj).validate();
  } catch (e) {
    console.log(`ERROR ${name}: ${e.message}`);
    failures++;
  }
});

// One typed constant per object: an unknown field anywhere in the literal is a compile error.
const dir = fs.mkdtempSync(path.join(process.cwd(), ".check-"));
try {
  const file = path.join(dir, "objects.mts");
  const body = objects
    .map((obj, i) => `export const o${i}: IScaledObject = ${JSON.stringify(obj, null, 2)};`)
    .join("\n");
  fs.writeFileSync(
    file,
    'import type { IScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";\n' +
      body + "\n",
  );
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    types: [],
  });
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    let where = "";
    if (d.file && d.start !== undefined) {
      // Name the object by the `export const oN` that contains the error.
      const before = d.file.text.slice(0, d.start);
      const m = [...before.matchAll(/export const o(\d+)/g)].pop();
      const obj = m ? objects[Number(m[1])] : undefined;
      where = obj ? `ScaledObject/${obj.metadata?.name}: ` : "";
    }
    console.log(`ERROR ${where}${msg}`);
    failures++;
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

if (failures === 0) console.log(`INFO ${objects.length} ScaledObject(s) valid against KEDA's schema`);
process.exit(failures === 0 ? 0 : 1);
