// Discovers (or pings) one node through urclient right after each connect,
// `runs` times, and prints {"found": N, "missed": M}.  urclient publishes
// without waiting for its reply queue's bindings: an agent that answers
// before they are in place goes unheard.
//   node urclient_right_after_connect.js PORT NODE_UUID RUNS discover|ping
'use strict';
var urclient = require('urclient');

var port = Number(process.argv[2]);
var node = process.argv[3];
var runs = Number(process.argv[4]);
var mode = process.argv[5];
function nop() {}
var log = { trace: nop, debug: nop, info: nop, warn: nop, error: nop, fatal: nop,
    child: function () { return log; } };
var found = 0, missed = 0, done = 0;

function next() {
    if (done++ === runs) {
        console.log(JSON.stringify({ found: found, missed: missed }));
        process.exit(0);
    }
    var client = urclient.create_ur_client({
        log: log, connect_timeout: 5000, enable_http: false,
        amqp_config: { login: 'guest', password: 'guest', host: '127.0.0.1', port: port }
    });
    client.on('error', function (err) { console.log(JSON.stringify({ error: err.message })); process.exit(1); });
    client.once('ready', function () {
        var seen = false, ended = false;
        function end() {
            if (ended) return;
            ended = true;
            if (seen) found++; else missed++;
            client.close();
            setTimeout(next, 20);
        }
        if (mode === 'ping') {
            client.ping({ server_uuid: node, timeout: 1500 }, function (err) {
                seen = !err;
                end();
            });
            return;
        }
        var disco = client.discover({ timeout: 1500, exclude_headnode: false, node_list: [node] });
        disco.on('server', function () { seen = true; });
        disco.on('error', end);
        disco.on('end', end);
    });
}
next();
