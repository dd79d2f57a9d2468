"""The load driver (turnoload + generate.mjs on npm loadtest), its lab and loopback runners."""
