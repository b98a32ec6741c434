// Shared by kv.mjs and obj.mjs: connect with credentials from the environment (never argv),
// run one command, print its result as one JSON document on stdout.
//
// Environment: NATS_URL, NATS_USER, NATS_PASSWORD.
// Output: {"ok": true, "result": ...} and exit 0, or {"ok": false, "error": {...}} and exit 3.
import { connect } from "@nats-io/transport-node";

export async function run(commands, argv) {
  const [command, ...args] = argv;
  const fn = commands[command];
  if (!fn) {
    fail({ name: "Usage", message: `unknown command ${command}; one of ${Object.keys(commands).join(", ")}` });
    return;
  }
  const nc = await connect({
    servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
    user: process.env.NATS_USER || undefined,
    pass: process.env.NATS_PASSWORD || undefined,
    name: "natsop-interop-js",
  });
  try {
    const result = await fn(nc, ...args);
    process.stdout.write(JSON.stringify({ ok: true, result }) + "\n");
  } catch (err) {
    fail(describeError(err));
  } finally {
    await nc.close();
  }
}

function describeError(err) {
  const out = { name: err?.name ?? "Error", message: String(err?.message ?? err) };
  // JetStreamApiError: code is the API's err_code, status its HTTP-like code.
  if (typeof err?.code === "number") out.code = err.code;
  if (typeof err?.status === "number") out.status = err.status;
  if (typeof err?.apiError === "function") out.api_error = err.apiError();
  return out;
}

function fail(error) {
  process.stdout.write(JSON.stringify({ ok: false, error }) + "\n");
  process.exitCode = 3;
}

export function parseJson(text, what) {
  try {
    return text === undefined || text === "" ? {} : JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} is not JSON: ${err.message}`);
  }
}

export function requireArgs(args, names) {
  names.forEach((name, i) => {
    if (args[i] === undefined) throw new Error(`missing argument <${name}>`);
  });
}
