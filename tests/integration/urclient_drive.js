// Drives one agent through Triton's own client library, urclient (npm),
// and prints one JSON line per step for test_urclient.py to check.
//   node urclient_drive.js PORT NODE_UUID
'use strict';
var urclient = require('urclient');

var port = Number(process.argv[2]);
var node = process.argv[3];
function out(step, err, value) {
    console.log(JSON.stringify({ step: step, error: err ? err.message : null, value: value }));
}
function nop() {}
var log = { trace: nop, debug: nop, info: nop, warn: nop, error: nop, fatal: nop,
    child: function () { return log; } };

var client = urclient.create_ur_client({
    log: log, connect_timeout: 5000, enable_http: false,
    amqp_config: { login: 'guest', password: 'guest', host: '127.0.0.1', port: port }
});
var timer = setTimeout(function () { out('timeout', new Error('gave up after 60 s')); process.exit(2); }, 60000);
client.on('error', function (err) { out('client-error', err); process.exit(1); });
client.once('ready', function () {
    var found = [];
    var disco = client.discover({ timeout: 3000, exclude_headnode: false, node_list: [node] });
    disco.on('server', function (s) { found.push(s); });
    disco.on('error', function (err) { out('discover', err); });
    disco.on('end', function () {
        out('discover', null, found);
        client.ping({ server_uuid: node, timeout: 5000 }, function (err, reply) {
            out('ping', err, reply);
            client.exec({ server_uuid: node, timeout: 10000,
                script: '#!/bin/bash\necho "hello $1 $2"; echo "FOO=$FOO" >&2; exit 7',
                args: ['big', 'world'], env: { FOO: 'bar' } }, function (err2, r2) {
                out('exec', err2, r2);
                client.exec({ server_uuid: node, timeout: 10000,
                    script: '#!/bin/sh\n/usr/bin/env' }, function (err3, r3) {
                    out('exec-default-env', err3, r3);
                    // 700,000 bytes of "a" + a 4-byte character: 5-byte
                    // units against 131,064-byte frames, so some frame
                    // boundary falls inside a character whatever the
                    // reply's prefix (urclient decodes frame by frame).
                    client.exec({ server_uuid: node, timeout: 20000,
                        script: '#!/bin/bash\nu=$(printf "a\\360\\237\\230\\200")\n' +
                            'for i in $(seq 140); do s=""; for j in $(seq 1000); do s="$s$u"; done; ' +
                            'printf "%s" "$s"; done' }, function (err4, r4) {
                        var want = new Array(140001).join('a\ud83d\ude00');
                        out('exec-utf8', err4, r4 && { exit_status: r4.exit_status,
                            same: r4.stdout === want, length: r4.stdout.length,
                            replacement_chars: r4.stdout.split('\ufffd').length - 1 });
                        clearTimeout(timer);
                        client.close();
                        process.exit(0);
                    });
                });
            });
        });
    });
});
