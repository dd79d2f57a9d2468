// A StatsD server module (the interface of statsd's servers/udp.js): a UDP
// listener that asks for a larger receive buffer, so that bursts of metrics
// wait in the kernel instead of being dropped. The kernel caps the size at
// net.core.rmem_max.
const dgram = require('dgram');

exports.start = function (config, callback) {
  const server = dgram.createSocket({
    type: config.address_ipv6 ? 'udp6' : 'udp4',
    recvBufferSize: config.recvBufferSize,
  }, callback);
  server.bind(config.port || 8125, config.address || undefined);
  this.server = server;
  return true;
};
