package org.kdpose.sample

import org.json.JSONObject

/** The fields of kdpose_tf's sidecar JSON (kdpose_tf/export/sidecar.py) the app needs. */
data class Quant(val scale: Float, val zeroPoint: Int)

data class Sidecar(
    val inputHeight: Int,
    val inputWidth: Int,
    val inputDtype: String,          // "uint8", "int8" or "float32"
    val inputQuant: Quant?,
    val outputDtype: String,
    val outputQuant: Quant?,
    val heatmapHeight: Int,
    val heatmapWidth: Int,
    val numKeypoints: Int,
    val strideX: Float,
    val strideY: Float,
    val names: List<String>,
    val skeleton: List<Pair<Int, Int>>,
) {
    companion object {
        private fun quant(o: JSONObject): Quant? =
            if (o.isNull("quantization")) null
            else o.getJSONObject("quantization").let { Quant(it.getDouble("scale").toFloat(), it.getInt("zero_point")) }

        fun parse(text: String): Sidecar {
            val root = JSONObject(text)
            val input = root.getJSONObject("input")
            val output = root.getJSONObject("output")
            val hm = root.getJSONObject("heatmap")
            val stride = hm.getJSONArray("stride_xy")
            val kp = if (root.isNull("keypoints")) null else root.getJSONObject("keypoints")
            val names = mutableListOf<String>()
            val skeleton = mutableListOf<Pair<Int, Int>>()
            if (kp != null) {
                val n = kp.getJSONArray("names")
                for (i in 0 until n.length()) names.add(n.getString(i))
                val s = kp.getJSONArray("skeleton")
                for (i in 0 until s.length()) skeleton.add(s.getJSONArray(i).getInt(0) to s.getJSONArray(i).getInt(1))
            }
            return Sidecar(
                input.getInt("height"), input.getInt("width"), input.getString("dtype"), quant(input),
                output.getString("dtype"), quant(output),
                hm.getInt("height"), hm.getInt("width"), hm.getInt("num_keypoints"),
                stride.getDouble(0).toFloat(), stride.getDouble(1).toFloat(), names, skeleton,
            )
        }
    }
}
