import { startPage } from "./counter.js";

startPage("smoke-webpack5");
