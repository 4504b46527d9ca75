// Runs webpack through its Node API (no CLI needed) and puts the page beside the bundle.
import { copyFileSync } from "node:fs";
import webpack from "webpack";
import config from "./webpack.config.js";

const stats = await new Promise((resolve, reject) =>
  webpack(config, (error, result) => (error ? reject(error) : resolve(result))),
);
const info = stats.toJson({ all: false, errors: true, warnings: true });
if (stats.hasErrors()) throw new Error(info.errors.map((e) => e.message).join("\n"));
// A warning (for example about an asset's size) is printed, and the test fails on it.
for (const warning of info.warnings) console.error("webpack warning:", warning.message);
if (info.warnings.length) process.exit(2);
copyFileSync("index.html", "dist/index.html");
