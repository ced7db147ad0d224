// Discovers (or pings) one node through urclient right after each connect,
// `runs` times, and prints {"found": N, "missed": M}.  urclient publishes
// without waiting for its reply queue's bindings: an agent that answers
// before they are in place goes unheard.
//   node urclient_right_after_connect.js PORT NODE_UUID RUNS discover|ping|pings|invalid
// (pings: three pings at once, found when all three are answered; invalid:
// an exec the agent refuses at once, found when its exit 2 comes back.)
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
        if (mode === 'pings') {
            var answered = 0, failed = false;
            [0, 1, 2].forEach(function () {
                client.ping({ server_uuid: node, timeout: 1500 }, function (err) {
                    if (err) failed = true; else answered++;
                    if (answered + (failed ? 1 : 0) >= 3 || failed) {
                        seen = !failed && answered === 3;
                        end();
                    }
                });
            });
            return;
        }
        if (mode === 'invalid') {
            client.exec({ server_uuid: node, script: '#!/bin/sh\nexit 0\n', args: [],
                env: { N: 5 }, timeout: 1500 }, function (err, res) {
                seen = !err && res && res.exit_status === 2;
                end();
            });
            return;
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
