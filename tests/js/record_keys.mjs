// The subscription keys JS SDK 0.28.1 builds, for tests/test_records_pocketbase_diff.py.
//
// Reads one JSON array from stdin; each item is {"filter"?, "fields"?} or, to let the SDK write
// the filter, {"template", "params", "fields"?} (the filter is pb.filter(template, params)).
// Prints one JSON array: per item, {"key", "filter"} with the key
// pb.collection(argv[2]).subscribe("*", cb, options) registered. Nothing is connected: the
// service's connect() is replaced by a no-op, so only the key building runs.

import PocketBase from "pocketbase";

const collection = process.argv[2];
let input = "";
for await (const chunk of process.stdin) {
  input += chunk;
}
const pb = new PocketBase("http://127.0.0.1:1");
pb.realtime.connect = async () => {};
const out = [];
for (const item of JSON.parse(input)) {
  const options = {};
  const filter = item.template !== undefined ? pb.filter(item.template, item.params) : item.filter;
  if (filter !== undefined) options.filter = filter;
  if (item.fields !== undefined) options.fields = item.fields;
  const before = new Set(Object.keys(pb.realtime.subscriptions));
  await pb.collection(collection).subscribe("*", () => {}, options);
  const added = Object.keys(pb.realtime.subscriptions).filter((key) => !before.has(key));
  out.push({ key: added.length ? added[0] : null, filter: filter === undefined ? null : filter });
}
process.stdout.write(JSON.stringify(out));
