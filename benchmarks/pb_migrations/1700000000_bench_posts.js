/// Benchmark migration (record-event mode of benchmarks/run.py): a public `posts` collection.
///
/// Fields `seq` (integer: the load generator's round) and `pad` (text), like
/// benchmarks/record_app.py's Post. listRule and viewRule "" let subscribers without auth get
/// the events of `posts/*`; createRule "" lets the load generator create without auth via
/// POST /api/collections/posts/records. The runner passes --migrationsDir only in that mode,
/// so the broadcast runs' PocketBase has no collection of its own.

migrate((app) => {
    const collection = new Collection({
        type: "base",
        name: "posts",
        listRule: "",
        viewRule: "",
        createRule: "",
        fields: [
            { name: "seq", type: "number", onlyInt: true },
            { name: "pad", type: "text", max: 1000 },
        ],
    });
    app.save(collection);
}, (app) => {
    app.delete(app.findCollectionByNameOrId("posts"));
});
