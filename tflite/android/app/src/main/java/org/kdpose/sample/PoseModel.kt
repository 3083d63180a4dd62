package org.kdpose.sample

import android.content.Context
import android.graphics.Bitmap
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import kotlin.math.roundToInt

/** Keypoint in model-input pixels with its heatmap score. */
data class Keypoint(val x: Float, val y: Float, val score: Float)

/** LiteRT Interpreter + the sidecar's pre/post-processing (raw RGB in, argmax + quarter offset out). */
class PoseModel(context: Context, model: String = "model.tflite", sidecar: String = "model.json", threads: Int = 2) {
    val info: Sidecar = Sidecar.parse(context.assets.open(sidecar).bufferedReader().use { it.readText() })
    private val interpreter: Interpreter
    private val input: ByteBuffer
    private val output: ByteBuffer

    init {
        val fd = context.assets.openFd(model)
        val mapped = FileInputStream(fd.fileDescriptor).channel
            .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        interpreter = Interpreter(mapped, Interpreter.Options().setNumThreads(threads))
        val inBytes = if (info.inputDtype == "float32") 4 else 1
        val outBytes = if (info.outputDtype == "float32") 4 else 1
        input = ByteBuffer.allocateDirect(info.inputHeight * info.inputWidth * 3 * inBytes).order(ByteOrder.nativeOrder())
        output = ByteBuffer.allocateDirect(info.heatmapHeight * info.heatmapWidth * info.numKeypoints * outBytes)
            .order(ByteOrder.nativeOrder())
    }

    /** `bitmap` must already be inputWidth x inputHeight (the caller crops and scales the frame). */
    fun run(bitmap: Bitmap): List<Keypoint> {
        val w = info.inputWidth
        val h = info.inputHeight
        val pixels = IntArray(w * h)
        bitmap.getPixels(pixels, 0, w, 0, 0, w, h)
        input.rewind()
        val q = info.inputQuant
        for (p in pixels) {
            for (c in intArrayOf((p shr 16) and 0xFF, (p shr 8) and 0xFF, p and 0xFF)) { // R, G, B: raw 0..255
                when (info.inputDtype) {
                    "float32" -> input.putFloat(c.toFloat())
                    "uint8" -> input.put((c / q!!.scale + q.zeroPoint).roundToInt().coerceIn(0, 255).toByte())
                    else -> input.put((c / q!!.scale + q.zeroPoint).roundToInt().coerceIn(-128, 127).toByte())
                }
            }
        }
        output.rewind()
        interpreter.run(input, output)
        return decode()
    }

    private fun value(index: Int): Float = when (info.outputDtype) {
        "float32" -> output.getFloat(index * 4)
        "uint8" -> ((output.get(index).toInt() and 0xFF) - info.outputQuant!!.zeroPoint) * info.outputQuant.scale
        else -> (output.get(index).toInt() - info.outputQuant!!.zeroPoint) * info.outputQuant.scale
    }

    /** Sidecar "decoding": per-joint argmax, quarter-pixel shift toward the higher neighbour, x stride. */
    private fun decode(): List<Keypoint> {
        val hh = info.heatmapHeight
        val hw = info.heatmapWidth
        val k = info.numKeypoints
        fun at(y: Int, x: Int, j: Int) = value((y * hw + x) * k + j)
        return (0 until k).map { j ->
            var best = Float.NEGATIVE_INFINITY
            var bx = 0
            var by = 0
            for (y in 0 until hh) for (x in 0 until hw) {
                val v = at(y, x, j)
                if (v > best) { best = v; bx = x; by = y }
            }
            var px = bx.toFloat()
            var py = by.toFloat()
            if (bx in 1 until hw - 1) px += 0.25f * Math.signum(at(by, bx + 1, j) - at(by, bx - 1, j))
            if (by in 1 until hh - 1) py += 0.25f * Math.signum(at(by + 1, bx, j) - at(by - 1, bx, j))
            Keypoint(px * info.strideX, py * info.strideY, best)
        }
    }

    fun close() = interpreter.close()
}
