import { startPage } from "./counter.js";

startPage("smoke-esbuild");
