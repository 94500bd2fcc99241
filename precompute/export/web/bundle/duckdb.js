// The one module the SQL page imports: DuckDB-WASM's browser API and arrow's type ids, bundled by esbuild
// (npm run build; npm ci runs it) with the part of apache-arrow they use, so the page loads one file.
export { AsyncDuckDB, VoidLogger } from "@duckdb/duckdb-wasm";
export { Type } from "apache-arrow";
