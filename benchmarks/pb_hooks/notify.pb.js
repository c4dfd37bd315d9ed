/// Benchmark hook: POST /notify {"topic": "...", "data": <any JSON>} -> {"delivered": N}
///
/// Mirrors examples/notify_app.py for PocketBase: the data is encoded once, one
/// SubscriptionMessage is built, and every registered client that holds exactly
/// `topic` as a subscription gets it (sequentially, as in the JS docs' example).
/// No auth: the route is public so the benchmark needs no superuser.

routerAdd("POST", "/notify", function (e) {
    var info = e.requestInfo();
    var body = info.body || {};
    var topic = body["topic"];
    if (typeof topic !== "string" || topic === "") {
        return e.json(400, { data: {}, message: "Expected {\"topic\": str, \"data\": any}.", status: 400 });
    }
    var message = new SubscriptionMessage({
        name: topic,
        data: JSON.stringify(body["data"] === undefined ? null : body["data"]),
    });
    var clients = $app.subscriptionsBroker().clients();
    var delivered = 0;
    for (var id in clients) {
        var client = clients[id];
        if (client.hasSubscription(topic)) {
            client.send(message);
            delivered++;
        }
    }
    return e.json(200, { delivered: delivered });
});

/// GET /stats -> {"clients": N}, like the Flask example app.
routerAdd("GET", "/stats", function (e) {
    return e.json(200, { clients: $app.subscriptionsBroker().totalClients() });
});
